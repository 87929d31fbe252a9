//! `GET /v1/health` and `GET /v1/info`: no authentication, no writes.

use super::Step;
use super::respond;
use crate::config::Config;
use crate::error::ApiError;
use crate::http::Response;
use crate::limits::{
    MAX_ENVELOPE_BYTES, MAX_IDENTITY_BYTES, MAX_KEY_BYTES, MAX_META_BYTES, MAX_PAGE, MAX_WAIT_SECONDS,
};
use serde_json::json;

pub fn health() -> Result<Step, ApiError> {
    respond(Response::json(200, &json!({ "status": "ok" })))
}

pub fn info(config: &Config, generation: &str) -> Result<Step, ApiError> {
    respond(Response::json(
        200,
        &json!({
            "name": "sync-node",
            "version": env!("CARGO_PKG_VERSION"),
            "generation": generation,
            "registration": config.registration.as_str(),
            "password_reset": config.reset_hook.is_some(),
            "max_store_bytes": config.max_store_bytes,
            "max_meta_bytes": MAX_META_BYTES,
            "max_key_bytes": MAX_KEY_BYTES,
            "max_entry_bytes": config.max_entry_bytes,
            "max_log_bytes": config.max_log_bytes,
            "max_page": MAX_PAGE,
            "max_identity_bytes": MAX_IDENTITY_BYTES,
            "max_envelope_bytes": MAX_ENVELOPE_BYTES,
            "quota_bytes": config.quota_bytes,
            "session_ttl_days": config.session_ttl_days,
            "max_wait_seconds": MAX_WAIT_SECONDS,
        }),
    ))
}
