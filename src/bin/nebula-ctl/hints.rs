//! What the CLI user can do about a refusal, in the CLI's terms (a flag, a profile key, a
//! kernel setting). The library's messages name the mechanism; this adds the command-line
//! side, so that no hint the CLI prints names a Rust type.

use nebula_memory::isolation::process::ProcessError;

/// The flag (and profile key, the same name) that asked for each cgroup v2 file, by the
/// start of the library's feature text.
const CGROUP_FLAGS: [(&str, &str); 5] = [
    ("memory.high", "memory-high"),
    ("memory.swap.max", "swap"),
    ("cpu.max", "cpu"),
    ("io.max", "io"),
    ("pids.max", "pids"),
];

/// The CLI's hint for a process-level refusal, if it has one.
pub fn process(e: &ProcessError) -> Option<String> {
    let ProcessError::Unsupported { feature, .. } = e else {
        return None;
    };
    if *feature == "cgroup v2 memory controller" {
        return Some(
            "Hint: --memory-fallback rlimit-as (profile key memory-fallback = \"rlimit-as\") \
             limits each process's address space instead; or leave out --memory"
                .into(),
        );
    }
    if let Some((_, flag)) = CGROUP_FLAGS.iter().find(|(f, _)| feature.starts_with(f)) {
        return Some(format!(
            "Hint: leave out --{flag} (profile key {flag}), or run where cgroup v2 is available \
             to you (nebula-ctl probe shows what this host offers)"
        ));
    }
    if *feature == "user namespaces" {
        return Some(
            "Hint: allow unprivileged user namespaces (sysctl user.max_user_namespaces above 0, \
             and kernel.unprivileged_userns_clone=1 where it exists); nebula-ctl probe shows why \
             they fail"
                .into(),
        );
    }
    None
}
