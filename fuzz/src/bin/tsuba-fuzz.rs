//! Runs one fuzz target under AFL++: `cargo afl fuzz -i corpus/T -o out/T -- tsuba-fuzz T`.
//! Outside afl-fuzz it runs the target once on standard input (`tsuba-fuzz T < crash`), which
//! is how a crash is reproduced.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = tsuba_fuzz::target(&name) else {
        let names: Vec<&str> = tsuba_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        #[allow(clippy::print_stderr, reason = "a usage message")]
        {
            eprintln!("usage: tsuba-fuzz TARGET; targets: {}", names.join(" "));
        }
        std::process::exit(2);
    };
    // Run once before the fork server starts, so the target's one-time set-up (keys generated
    // into a OnceLock, such as jwe_tee_key's RSA key) happens in the parent that every child is
    // forked from, instead of again in every child, where it exceeds AFL's time per input.
    target(&[]);
    afl::fuzz(true, target);
}
