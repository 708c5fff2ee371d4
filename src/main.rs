//! `train-vector`: parse the command line, run it, map the outcome to an exit code.

fn main() -> std::process::ExitCode {
    train_vector::cli::main()
}
