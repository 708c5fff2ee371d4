//! The `.pkl` vector reader: any bytes; what it accepts must survive a write and re-read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use train_vector::vector::SteeringVector;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = SteeringVector::from_pkl(data, "fuzz") {
        let again = SteeringVector::from_pkl(&v.to_pkl().unwrap(), "fuzz").unwrap();
        assert_eq!(again, v);
    }
});
