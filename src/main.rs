//! The `gitvault` command: parses arguments and hands them to the library (see src/cli/).

mod cli;

fn main() {
    std::process::exit(cli::main());
}
