//! The contrast-pairs loader: any bytes, as a `--data-dir` file of every contrast type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use train_vector::data::{parse_pairs, ContrastType};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for t in ContrastType::ALL {
        if let Ok(pairs) = parse_pairs(text, t) {
            for p in &pairs {
                assert!(!p.positive.is_empty() && !p.negative.is_empty());
            }
        }
    }
});
