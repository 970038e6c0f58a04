//! "Did you mean": names close to one that is not known.
//!
//! Levenshtein distance from strsim (already in the build through clap's own suggestions),
//! plus a substring match, so `greeter` finds `go.micro.srv.greeter`, which is 13 edits away.

/// Up to three candidates close to `wanted`, closest first.
pub(super) fn close_names<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let wanted_lc = wanted.to_ascii_lowercase();
    // A typo of about one character in three is still a typo (five at most); more is
    // another name.
    let limit = (wanted.chars().count() / 3).clamp(2, 5);
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .filter(|c| *c != wanted)
        .filter_map(|c| {
            let c_lc = c.to_ascii_lowercase();
            let d = strsim::levenshtein(&wanted_lc, &c_lc);
            if d <= limit {
                Some((d, c))
            } else if wanted_lc.len() >= 3 && c_lc.contains(&wanted_lc) {
                Some((limit + 1, c))
            } else {
                None
            }
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(3).map(|(_, c)| c.to_string()).collect()
}

/// "did you mean a, b or c?" or nothing.
pub(super) fn did_you_mean(names: &[String]) -> Option<String> {
    match names {
        [] => None,
        [one] => Some(format!("did you mean {one}?")),
        [init @ .., last] => Some(format!("did you mean {} or {last}?", init.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_and_short_names() {
        let names = ["go.micro.srv.greeter", "go.micro.srv.greeter-admin", "go.micro.srv.orders"];
        assert_eq!(close_names("go.micro.srv.greter", names)[0], "go.micro.srv.greeter");
        assert_eq!(close_names("greeter", names), vec!["go.micro.srv.greeter", "go.micro.srv.greeter-admin"]);
        assert!(close_names("billing", names).is_empty());
        assert_eq!(did_you_mean(&["a".into(), "b".into()]).unwrap(), "did you mean a or b?");
    }
}
