//! The `lifeboat` binary: a thin shell over [`lifeboat_cli::main`].

fn main() -> std::process::ExitCode {
    lifeboat_cli::main()
}
