//! `test-guests NAME...`: builds the named guests (all without arguments) and prints
//! the path of each ELF file, one a line. Used by the benchmarks in bench/.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<&str> = if args.is_empty() {
        test_guests::GUESTS.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for name in names {
        match test_guests::build(name) {
            Ok(path) => println!("{}", path.display()),
            Err(e) => {
                eprintln!("test-guests: {e}");
                std::process::exit(1);
            }
        }
    }
}
