fn main() {
    std::process::exit(packfy_deploy::run());
}
