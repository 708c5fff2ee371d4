//! The `.safetensors` vector reader: any bytes; what it accepts must survive a write and re-read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use train_vector::vector::SteeringVector;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = SteeringVector::from_safetensors(data, "fuzz") {
        let again = SteeringVector::from_safetensors(&v.to_safetensors().unwrap(), "fuzz").unwrap();
        assert_eq!(again, v);
    }
});
