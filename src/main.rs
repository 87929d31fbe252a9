//! The `sync-node` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    sync_node::cli::main(std::env::args_os().skip(1).collect())
}
