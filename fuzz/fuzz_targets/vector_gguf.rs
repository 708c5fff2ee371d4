//! The GGUF header check and the control-vector reader: any bytes. A header the check accepts
//! must also be readable by candle's GGUF reader without a panic, as model files are.
#![no_main]

use libfuzzer_sys::fuzz_target;
use train_vector::gguf_header::GgufHeader;
use train_vector::vector::SteeringVector;

fuzz_target!(|data: &[u8]| {
    let _ = SteeringVector::from_gguf(data, "fuzz");
    if GgufHeader::parse(data).is_ok() {
        let mut cursor = std::io::Cursor::new(data);
        if let Ok(content) = candle_core::quantized::gguf_file::Content::read(&mut cursor) {
            for info in content.tensor_infos.values() {
                let _ = info.read(&mut cursor, content.tensor_data_offset, &candle_core::Device::Cpu);
            }
        }
    }
});
