//! `train-vector inspect FILE`: what a vector file holds.

use super::args::InspectArgs;
use crate::error::Result;
use crate::vector::SteeringVector;

pub fn run(a: &InspectArgs) -> Result<()> {
    let v = SteeringVector::load(&a.file)?;
    println!("file: {}", a.file.display());
    println!("layer_type: {}", v.layer_type);
    println!("hidden_size: {}", v.hidden_size().unwrap_or(0));
    for (k, val) in &v.metadata {
        println!("{k}: {val}");
    }
    println!("layers: {}", v.layer_activations.len());
    println!("{:>6}  {:>12}", "layer", "L2 norm");
    for (l, d) in &v.layer_activations {
        let norm = d.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        println!("{l:>6}  {norm:>12.6}");
    }
    Ok(())
}
