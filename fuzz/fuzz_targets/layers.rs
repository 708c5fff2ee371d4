//! `--layers`: any text, resolved against models of 0 to 255 blocks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use train_vector::layers::LayerSpec;

fuzz_target!(|data: &[u8]| {
    let Some((&depth, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if let Ok(spec) = LayerSpec::parse(text) {
        let _ = spec.file_part();
        // What the metadata and logs print reads back as the same layers.
        assert_eq!(LayerSpec::parse(&spec.to_string()).ok(), Some(spec.clone()));
        if let Ok(layers) = spec.resolve(depth as usize) {
            assert!(layers.windows(2).all(|w| w[0] < w[1]));
            assert!(layers.iter().all(|&l| l < depth as usize));
        }
    }
});
