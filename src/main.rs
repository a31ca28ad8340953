//! The `capdial` binary: parses arguments and hands over to the library's CLI.

fn main() -> std::process::ExitCode {
    match capdial::cli::run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("capdial: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
