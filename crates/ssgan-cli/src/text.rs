//! Wording helpers for messages.

/// Returns `count` with `noun`, adding an "s" for any count but 1: "1 worker", "2 workers".
pub fn counted(count: impl Into<u64>, noun: &str) -> String {
    let count = count.into();
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::counted;

    #[test]
    fn counted_adds_plural_s() {
        assert_eq!(counted(1u32, "worker"), "1 worker");
        assert_eq!(counted(0u32, "worker"), "0 workers");
        assert_eq!(counted(8u64, "thread"), "8 threads");
    }
}
