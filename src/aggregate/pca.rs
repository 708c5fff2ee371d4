//! The principal-direction aggregators: steering-vectors' `pca_aggregator` and repeng's
//! `pca_diff` / `pca_center`, on the `n x h` matrix `d` of differences `pos - neg` (f64).
//!
//! All three take a first principal direction from one exact symmetric eigendecomposition of
//! the smaller Gram matrix ([`top_direction`]); they differ in what they centre and in how
//! they choose the sign.

use faer::{Mat, MatRef, Side};

use crate::error::{Error, Result};

/// steering-vectors' `pca_aggregator`: `_uncentered_pca` of `[d; -d]` is the top left-singular
/// vector of its transpose, i.e. the top eigenvector of `2·dᵀd`, which is `d`'s top
/// right-singular vector; the sign is `sign(mean(d·v))`, and a zero mean projection gives the
/// zero vector as `torch.sign(0)` does there.
pub(super) fn steering_vectors(d: MatRef<'_, f64>) -> Result<Vec<f64>> {
    let Some(v) = top_direction(d)? else {
        return Ok(vec![0.0; d.ncols()]);
    };
    let mean_projection = projections(d, &v).iter().sum::<f64>() / d.nrows() as f64;
    Ok(if mean_projection > 0.0 {
        v
    } else if mean_projection < 0.0 {
        v.into_iter().map(|x| -x).collect()
    } else {
        vec![0.0; v.len()]
    })
}

/// repeng's `pca_diff`: sklearn's PCA centres the differences before its SVD.
pub(super) fn repeng_diff(d: MatRef<'_, f64>) -> Result<Vec<f64>> {
    let (n, h) = d.shape();
    let mut mean = vec![0.0; h];
    for i in 0..n {
        for (m, x) in mean.iter_mut().zip(d.row(i).iter()) {
            *m += x;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    // Transposed like `d`'s storage, a pair per column.
    let centred = Mat::from_fn(h, n, |k, i| d[(i, k)] - mean[k]);
    // Identical differences centre to exact zeros: their f32-derived values sum exactly.
    let v = top_direction(centred.transpose())?.ok_or_else(|| {
        Error::new("the differences do not vary across pairs: `pca-diff` has no direction")
            .with_hint("give 2 or more pairs whose differences differ, or use `mean` or `pca`")
    })?;
    Ok(repeng_sign(d, v))
}

/// repeng's `pca_center`: each pair's sides minus their mean are `d/2` and `-d/2`; those rows
/// already average to zero, so sklearn's centring changes nothing and the component is `d`'s
/// top right-singular vector, the same axis as `pca` (only the sign rule differs).
pub(super) fn repeng_center(d: MatRef<'_, f64>) -> Result<Vec<f64>> {
    let v = top_direction(d)?.ok_or_else(|| {
        Error::new("every pair's positive and negative activations are equal: `pca-center` has no direction")
    })?;
    Ok(repeng_sign(d, v))
}

/// repeng's sign: first sklearn's `svd_flip` convention (since sklearn 1.5, the entry of
/// largest magnitude positive, the first such on ties), then flipped when more pairs project
/// their positive side below the negative one than above it. The positive side projects
/// higher exactly when `d·v > 0`, for raw and for pair-centred activations alike.
fn repeng_sign(d: MatRef<'_, f64>, mut v: Vec<f64>) -> Vec<f64> {
    let mut largest = 0;
    for (k, x) in v.iter().enumerate() {
        if x.abs() > v[largest].abs() {
            largest = k;
        }
    }
    if v[largest] < 0.0 {
        v.iter_mut().for_each(|x| *x = -*x);
    }
    let p = projections(d, &v);
    let above = p.iter().filter(|&&x| x > 0.0).count();
    let below = p.iter().filter(|&&x| x < 0.0).count();
    if below > above {
        v.iter_mut().for_each(|x| *x = -*x);
    }
    v
}

/// The unit top right-singular vector of `x` (rows are samples), or `None` when `x` is zero.
///
/// Through the smaller Gram matrix: for `n <= h`, the top eigenvector `a` of `x xᵀ` (`n x n`)
/// maps back to `xᵀa`; otherwise `xᵀx` (`h x h`) gives it directly. `O(n·h·m + m³)` time and
/// `8·m²` bytes for `m = min(n, h)`. Only the top direction is wanted, and squaring the
/// singular values does not hurt its accuracy.
fn top_direction(x: MatRef<'_, f64>) -> Result<Option<Vec<f64>>> {
    let (n, h) = x.shape();
    let wide = n <= h;
    let gram: Mat<f64> = if wide {
        x * x.transpose()
    } else {
        x.transpose() * x
    };
    let eig = gram
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| Error::new("the eigendecomposition of the activations did not converge"))?;
    let m = gram.nrows();
    // Eigenvalues come in nondecreasing order.
    if eig.S().column_vector()[m - 1] <= 0.0 {
        return Ok(None);
    }
    let top = eig.U().col(m - 1);
    let v: Vec<f64> = if wide {
        let mapped = x.transpose() * top;
        mapped.iter().copied().collect()
    } else {
        top.iter().copied().collect()
    };
    let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
    if norm > 0.0 {
        Ok(Some(v.into_iter().map(|a| a / norm).collect()))
    } else {
        Ok(None)
    }
}

/// `d·v` for every row of `d`, each summed over the hidden axis in order.
fn projections(d: MatRef<'_, f64>, v: &[f64]) -> Vec<f64> {
    (0..d.nrows())
        .map(|i| d.row(i).iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_unit(v: &[f64]) -> bool {
        (v.iter().map(|a| a * a).sum::<f64>() - 1.0).abs() < 1e-12
    }

    #[test]
    fn top_direction_is_the_axis_of_largest_spread() {
        // Wide (n <= h, through x xᵀ) and tall (n > h, through xᵀx): the rows have squared
        // lengths 4 along the second axis and 1 along the first.
        let wide = Mat::from_fn(2, 3, |i, k| [[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]][i][k]);
        let tall = Mat::from_fn(3, 2, |i, k| [[0.0, 2.0], [1.0, 0.0], [0.0, 0.0]][i][k]);
        for x in [wide.as_ref(), tall.as_ref()] {
            let v = top_direction(x).unwrap().unwrap();
            assert!((v[1].abs() - 1.0).abs() < 1e-12 && is_unit(&v), "{v:?}");
        }
        assert_eq!(
            top_direction(Mat::<f64>::zeros(3, 2).as_ref()).unwrap(),
            None
        );
        assert_eq!(
            top_direction(Mat::<f64>::zeros(2, 3).as_ref()).unwrap(),
            None
        );
    }
}
