//! A misbehaving workload: a thread outside a protection-key domain reads the domain's
//! secret.
//!
//! The read faults with `SEGV_PKUERR`; the violation core reports it (`fail-stop` on
//! stderr, naming the key) and aborts. Needs a CPU with PKU. Exit status 0 means it was
//! *not* stopped; 2 means this host has no protection keys.

use nebula_memory::pkey::{DomainSet, Pkeys};

fn main() {
    let pk = match Pkeys::probe() {
        Ok(pk) => pk,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let set = DomainSet::new(&pk);
    let secret = set.create_domain(None);
    let region = secret.alloc_region(4096).expect("region");
    {
        let _in = secret.enter().expect("enter");
        region.write(0, b"secret").expect("write");
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut b = [0u8; 6];
            let _ = region.read(0, &mut b);
        });
    });
    eprintln!("the workload was not stopped");
}
