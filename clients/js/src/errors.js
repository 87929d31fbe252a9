/**
 * Errors: every failure of this library is a `SyncError` carrying the
 * server's error code (SPEC §1), the HTTP status and, where the server sent
 * them, `Retry-After` (in seconds) and the `current` state of a 412.
 */

/** @typedef {{token: string, size: number, modified: number, seq: number, meta: string|null, logHead: number, logBase: number}} CurrentState */

export class SyncError extends Error {
  /**
   * @param {string} code the SPEC error code (`precondition_failed`, …) or
   *   one of this library's (README.md, "Errors"): `network`,
   *   `bad_response`, `bad_request`, `decrypt_failed`, `integrity`,
   *   `rollback`, `account_changed`, `keyring_missing`, `weak_passphrase`,
   *   `invalid_recovery_code`, `conflict_unresolved`, `not_found`,
   *   `payload_too_large`
   * @param {string} message
   * @param {{status?: number, retryAfter?: number|null, current?: CurrentState|null, etag?: string|null, cause?: unknown}} [details]
   */
  constructor(code, message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'SyncError';
    /** @type {string} */
    this.code = code;
    /** @type {number} 0 when no answer came */
    this.status = details.status ?? 0;
    /** @type {number|null} seconds, from `Retry-After` */
    this.retryAfter = details.retryAfter ?? null;
    /** @type {CurrentState|null} the current version, on a 412 the caller may read */
    this.current = details.current ?? null;
    /** @type {string|null} the current token from the 412's `ETag` */
    this.etag = details.etag ?? null;
  }

  /** True for failures worth retrying later: no answer, 408, 429, 503. */
  get transient() {
    return this.code === 'network' || this.status === 408 || this.status === 429 || this.status === 503 || this.status === 502 || this.status === 504;
  }
}
