//! Runs examples/seed_api.rs: the seed's API, written as the seed writes it, step by step
//! (a step this host cannot run prints `skipped:`; under `NEBULA_TEST_REQUIRE=all` that fails).
//!
//! The only test in this binary: one step forks a closure context, and a closure context's
//! child must not need a lock that another test thread holds.

#[path = "../examples/seed_api.rs"]
mod seed_api;

#[test]
fn the_seeds_code_behaves_as_the_seed_says() {
    seed_api::main().unwrap();
}
