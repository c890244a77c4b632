//! `pycache-server`: placeholder until the server lands.

fn main() {
    eprintln!("pycache-server: not built yet");
    std::process::exit(2);
}
