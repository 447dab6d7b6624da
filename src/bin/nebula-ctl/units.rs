//! How sizes are printed.

/// `64.0M`: a size with one decimal in the largest binary unit below it.
pub fn human(bytes: u64) -> String {
    const UNITS: [(u32, &str); 5] = [(40, "T"), (30, "G"), (20, "M"), (10, "K"), (0, "B")];
    for (shift, u) in UNITS {
        if bytes >= 1u64 << shift && shift > 0 {
            return format!("{:.1}{u}", bytes as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{bytes}B")
}
