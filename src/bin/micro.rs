//! `micro`: the toolkit's command line. Parsing and work live in `micro::cli`.
fn main() -> std::process::ExitCode {
    micro::cli::main()
}
