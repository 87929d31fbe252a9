//! Amounts held per key (an address's connections, budget bytes, hashing
//! places, an account's uploads in flight), keeping only keys that hold
//! some, so a map never outgrows its current holders.

use std::collections::HashMap;
use std::hash::Hash;
use std::ops::{AddAssign, Sub};

/// `key` holds `amount` more.
pub fn take<K: Hash + Eq, N: AddAssign + Default>(held: &mut HashMap<K, N>, key: K, amount: N) {
    *held.entry(key).or_default() += amount;
}

/// `key` gives `amount` back (never below none), and is forgotten at none.
pub fn give_back<K: Hash + Eq, N>(held: &mut HashMap<K, N>, key: &K, amount: N)
where
    N: Copy + Default + PartialOrd + Sub<Output = N>,
{
    if let Some(count) = held.get_mut(key) {
        *count = if *count > amount { *count - amount } else { N::default() };
        if *count == N::default() {
            held.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_holders_are_kept() {
        let mut held: HashMap<&str, u64> = HashMap::new();
        take(&mut held, "a", 3);
        take(&mut held, "a", 2);
        give_back(&mut held, &"a", 4);
        assert_eq!(held.get("a"), Some(&1));
        give_back(&mut held, &"a", 7);
        give_back(&mut held, &"b", 1);
        assert!(held.is_empty(), "at none, and never below");
    }
}
