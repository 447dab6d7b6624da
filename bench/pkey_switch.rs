//! Domain switch cost, as ratios against peers measured in the same run:
//!
//! - `raw WRPKRU`: open the key with one WRPKRU, touch the page, close it with another
//!   (the physical limit of a protection-key switch);
//! - `domain switch`: `Domain::enter()`, touch, leave (what nebula's thread level costs);
//! - `mprotect toggle`: make the same kind of page read-write, touch, make it `PROT_NONE`
//!   (what a switch costs without protection keys).
//!
//! Every touch is the same one-byte copy into the region. Median of 201 rounds of 1000
//! round trips each, ns per round trip. Without PKU (this repository's build host) it prints
//! `skipped: no PKU` and no figures.

use std::time::Instant;

use nebula_memory::isolation::Permissions;
use nebula_memory::pkey::{DomainSet, Pkeys, PkruValue};
use nebula_memory::sandbox::MemorySandbox;

const ROUNDS: usize = 201;
const PER_ROUND: usize = 1000;

fn median_ns(mut f: impl FnMut()) -> f64 {
    for _ in 0..PER_ROUND {
        f();
    }
    let mut v: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..PER_ROUND {
                f();
            }
            t.elapsed().as_nanos() as f64 / PER_ROUND as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[ROUNDS / 2]
}

fn main() {
    let pk = match Pkeys::probe() {
        Ok(p) => p,
        Err(e) => {
            println!("skipped: no PKU");
            println!("reason: {}", e.reason);
            return;
        }
    };
    let set = DomainSet::new(&pk);
    let domain = set.create_domain(None);
    let region = domain.alloc_region(4096).expect("domain region");
    // Give the domain its key (first entry assigns it), then measure.
    drop(domain.enter().expect("enter"));
    let key = domain.current_key().expect("the domain holds a key");
    let closed = pk.pkru();
    let open = PkruValue(closed.0 & !(0b11 << (2 * key)));

    let mut i = 0u8;
    let raw = median_ns(|| {
        pk.set_pkru(open);
        region.write(0, &[i]).unwrap();
        pk.set_pkru(closed);
        i = i.wrapping_add(1);
    });
    let switch = median_ns(|| {
        let _in = domain.enter().unwrap();
        region.write(0, &[i]).unwrap();
        i = i.wrapping_add(1);
    });
    let iso = nebula_memory::isolation::MemoryIsolation::new();
    let owner = iso.create_context().build().expect("context");
    let sandbox = MemorySandbox::new(owner.id());
    let page = sandbox
        .create_region(4096, Permissions::empty())
        .expect("sandbox region");
    let rw = Permissions::READ | Permissions::WRITE;
    let mprotect = median_ns(|| {
        page.set_permissions(rw).unwrap();
        page.write(0, &[i]).unwrap();
        page.set_permissions(Permissions::empty()).unwrap();
        i = i.wrapping_add(1);
    });

    println!("round trip (enter, touch one byte, leave); median of {ROUNDS} x {PER_ROUND}, ns");
    println!("{:<18} {:>10} {:>12}", "mechanism", "ns", "x raw WRPKRU");
    for (name, ns) in [
        ("raw WRPKRU", raw),
        ("domain switch", switch),
        ("mprotect toggle", mprotect),
    ] {
        println!("{name:<18} {ns:>10.1} {:>11.2}x", ns / raw);
    }
    println!(
        "domain switch / raw WRPKRU = {:.2} (target <= 2); mprotect toggle / domain switch = {:.1} (target >= 20)",
        switch / raw,
        mprotect / switch
    );
}
