//! `micro-sidecar`: `micro sidecar` as a binary of its own, to deploy next to an app. It links
//! only the sidecar's part of the toolkit. Parsing and work live in `micro::cli::sidecar`.
fn main() -> std::process::ExitCode {
    micro::cli::sidecar_main()
}
