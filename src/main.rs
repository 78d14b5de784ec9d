//! The `popfetch` binary.

fn main() -> std::process::ExitCode {
    popfetch::run()
}
