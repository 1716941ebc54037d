//! Sharded runs (issue 17): `backup --shard I/N` on N hosts (or N Kubernetes Indexed Job pods)
//! splits the configured sources' repositories between them by a stable hash, so that each
//! repository is backed up by exactly one shard, whatever the listing order.

/// Shard `index` of `count` (0-based: `0/4` … `3/4`, as Kubernetes' `JOB_COMPLETION_INDEX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("bad shard `{text}`: {why} (give I/N with 0 <= I < N, e.g. 0/4)")]
pub struct BadShard {
    text: String,
    why: &'static str,
}

impl std::str::FromStr for Shard {
    type Err = BadShard;
    fn from_str(text: &str) -> Result<Shard, BadShard> {
        let bad = |why| BadShard {
            text: text.to_string(),
            why,
        };
        let (i, n) = text.split_once('/').ok_or_else(|| bad("no `/`"))?;
        let index: u32 = i.trim().parse().map_err(|_| bad("I is not a number"))?;
        let count: u32 = n.trim().parse().map_err(|_| bad("N is not a number"))?;
        if count == 0 {
            return Err(bad("N must be at least 1"));
        }
        if index >= count {
            return Err(bad("I runs from 0 to N-1"));
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether this shard backs up the repository `owner/name` (case-insensitive, as the
    /// providers treat names). The hash is fixed by this function: changing it would move
    /// repositories between shards.
    pub fn keeps(&self, full_name: &str) -> bool {
        let hash = blake3::hash(full_name.to_ascii_lowercase().as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(first) % u64::from(self.count) == u64::from(self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_names() {
        let names: Vec<String> = (0..1000).map(|i| format!("acme/repo-{i:03}")).collect();
        let shards: Vec<Shard> = (0..4).map(|i| format!("{i}/4").parse().unwrap()).collect();
        let mut sizes = [0usize; 4];
        for name in &names {
            let owners: Vec<usize> = (0..4).filter(|i| shards[*i].keeps(name)).collect();
            assert_eq!(owners.len(), 1, "{name} is in {owners:?}");
            sizes[owners[0]] += 1;
            assert!(shards[owners[0]].keeps(&name.to_uppercase()));
        }
        assert!(sizes.iter().all(|s| (200..300).contains(s)), "{sizes:?}");
        // The assignment is fixed: a change of hash would move repositories between hosts.
        assert!(
            "0/4".parse::<Shard>().unwrap().keeps("acme/repo-000")
                == shards[0].keeps("acme/repo-000")
        );
    }

    #[test]
    fn bad_shards_are_refused() {
        for bad in ["4/4", "1/0", "a/2", "1", "-1/2", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!("3/4".parse::<Shard>().unwrap().to_string(), "3/4");
    }
}
