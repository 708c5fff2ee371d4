//! Criterion benchmarks of the aggregators at a real model's width: 500 pairs of hidden size
//! 4608 (Gemma-2 27B), synthetic activations with a planted direction.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use train_vector::aggregate::{aggregate, Aggregator};

const PAIRS: usize = 500;
const HIDDEN: usize = 4608;

/// Uniform noise in [-1, 1) from a fixed xorshift stream.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

/// Each pair shares a context (scale 10) and differs along one direction (scale 2) plus noise.
fn activations() -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut r = Noise(0x5EED_1234_ABCD_0001);
    let direction: Vec<f32> = (0..HIDDEN).map(|_| r.next()).collect();
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for _ in 0..PAIRS {
        let context: Vec<f32> = (0..HIDDEN).map(|_| 10.0 * r.next()).collect();
        let side = |r: &mut Noise, sign: f32| -> Vec<f32> {
            (context.iter().zip(&direction))
                .map(|(c, d)| c + sign * d + r.next())
                .collect()
        };
        pos.push(side(&mut r, 1.0));
        neg.push(side(&mut r, -1.0));
    }
    (pos, neg)
}

fn aggregators(c: &mut Criterion) {
    let (pos, neg) = activations();
    let mut group = c.benchmark_group(format!("aggregate_{PAIRS}x{HIDDEN}"));
    group.sample_size(10);
    for method in Aggregator::ALL {
        group.bench_with_input(BenchmarkId::from_parameter(method), &method, |b, &m| {
            b.iter(|| aggregate(m, &pos, &neg).expect("aggregates"))
        });
    }
    group.finish();
}

criterion_group!(benches, aggregators);
criterion_main!(benches);
