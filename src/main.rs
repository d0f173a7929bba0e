fn main() -> std::process::ExitCode {
    blast::app::main()
}
