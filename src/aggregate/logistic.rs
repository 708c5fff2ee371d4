//! steering-vectors' `logistic_aggregator`, solved to its optimum by Newton's method.
//!
//! `_get_normalized_regression_coef` fits sklearn's `LogisticRegression(fit_intercept=False)`
//! with sklearn's other defaults (C = 1, L2 penalty, lbfgs, tol 1e-4, max_iter 100) to the
//! rows `pos - mean = d/2` labelled 1 and `neg - mean = -d/2` labelled -1, where `mean` is
//! the pair's mean and `d = pos - neg`, and returns the coefficient at unit length. sklearn
//! minimizes `C·Σ_rows log(1 + exp(-y·wᵀx)) + ½|w|²` (its lbfgs path divides by `C·rows`,
//! which keeps the minimizer). Both rows of a pair give the same term, so with the margins
//! `m_i = wᵀd_i`
//!
//! ```text
//! f(w) = ½|w|² + 2C·Σ_i softplus(-m_i/2)        ∇f = w - C·Σ_i σ(-m_i/2)·d_i
//! ```
//!
//! `∇f = 0` puts the optimum in the span of the differences, `w = Dᵀβ`, so everything runs on
//! the `n x n` Gram matrix `K = D Dᵀ`, whatever the hidden size: the margins are `Kβ`. `f` is
//! strictly convex, so Newton's method reaches its unique optimum to rounding; sklearn's
//! L-BFGS stops near it (projected gradient below 1e-4, or 100 iterations), which is why
//! parity with it is a cosine of 0.9999 rather than 1. No random start, no tuning knob that
//! moves the answer.
//!
//! The Newton step `Δw = -(I + c·DᵀQD)⁻¹∇f`, with `c = C/2`, `s = σ(-m/2)` and
//! `Q = diag(q)`, `q = σ(m/2)·σ(-m/2)`, is `Δw = DᵀΔβ` where, by the Woodbury identity,
//!
//! ```text
//! r = C·s - β      Δβ = r - c·√q ⊙ B⁻¹(√q ⊙ K r)      B = I + c·diag(√q) K diag(√q)
//! ```
//!
//! `B ≥ I` is positive definite even when `K` is singular (repeated pairs). A step costs one
//! Cholesky factorization of `B`, `O(n³/3)`, plus a few `O(n²)` products; memory is three
//! `n x n` f64 matrices.

use faer::linalg::solvers::Solve;
use faer::{Mat, MatRef, Side};

use crate::error::{Error, Result};

/// sklearn's default inverse regularization strength.
const C: f64 = 1.0;
/// Newton converges quadratically; this many steps mean something is wrong.
const MAX_STEPS: usize = 100;
/// Stop once a step moves `w` by less than this fraction of its length.
const TOLERANCE: f64 = 1e-10;
/// Halvings of the step length when a full Newton step overshoots.
const BISECTIONS: usize = 50;

/// The optimal coefficient `w` for the differences `d` (`n x h`), not normalized.
pub(super) fn coefficients(d: MatRef<'_, f64>) -> Result<Vec<f64>> {
    let gram: Mat<f64> = d * d.transpose();
    let beta = newton(gram.as_ref())?;
    // w = Dᵀβ, each entry summed over pairs in order.
    let mut w = vec![0.0; d.ncols()];
    for (i, b) in beta.iter().enumerate() {
        for (wk, x) in w.iter_mut().zip(d.row(i).iter()) {
            *wk += x * b;
        }
    }
    Ok(w)
}

/// Minimizes `f(Dᵀβ)` over `β` given `K = D Dᵀ`.
fn newton(k: MatRef<'_, f64>) -> Result<Vec<f64>> {
    let n = k.nrows();
    let c = C / 2.0;
    let mut beta = vec![0.0; n];
    for _ in 0..MAX_STEPS {
        let m = mul(k, &beta);
        let sqrt_q: Vec<f64> = m.iter().map(|&mi| curvature(mi / 2.0).sqrt()).collect();
        let r: Vec<f64> = m
            .iter()
            .zip(&beta)
            .map(|(&mi, b)| C * sigmoid(-mi / 2.0) - b)
            .collect();
        let kr = mul(k, &r);
        let b = Mat::from_fn(n, n, |i, j| {
            let identity = if i == j { 1.0 } else { 0.0 };
            identity + c * sqrt_q[i] * k[(i, j)] * sqrt_q[j]
        });
        let llt = b.llt(Side::Lower).map_err(|_| {
            Error::new("logistic regression failed: its Newton system is not positive definite")
        })?;
        let mut y = Mat::from_fn(n, 1, |i, _| sqrt_q[i] * kr[i]);
        llt.solve_in_place(y.as_mut());
        let step: Vec<f64> = (0..n).map(|i| r[i] - c * sqrt_q[i] * y[(i, 0)]).collect();
        // The margins' change along the step, `D·Δw`.
        let e = mul(k, &step);
        let t = step_length(&m, &step, &e);
        for (b, s) in beta.iter_mut().zip(&step) {
            *b += t * s;
        }
        // |t·Δw| against |w| = sqrt(βᵀKβ), with the margins after the step.
        let moved = t * dot(&step, &e).max(0.0).sqrt();
        let margins: Vec<f64> = m.iter().zip(&e).map(|(mi, ei)| mi + t * ei).collect();
        let size = dot(&beta, &margins).max(0.0).sqrt();
        if moved <= TOLERANCE * size {
            return Ok(beta);
        }
    }
    Err(Error::new(format!(
        "logistic regression did not converge in {MAX_STEPS} Newton steps"
    )))
}

/// The step length along `Δw`: the full Newton step when `f` still descends at its end,
/// otherwise the exact minimizer of the convex `f(w + t·Δw)` on `[0, 1]` by bisection on the
/// sign of its slope, taking the side where `f` still descends. `m` are the margins, `e` the
/// margins' change.
fn step_length(m: &[f64], step: &[f64], e: &[f64]) -> f64 {
    // w·Δw = βᵀKΔβ = m·Δβ and Δw·Δw = Δβ·e.
    let (w_step, step_step) = (dot(m, step), dot(step, e));
    let slope = |t: f64| {
        let loss: f64 = m
            .iter()
            .zip(e)
            .map(|(mi, ei)| sigmoid(-(mi + t * ei) / 2.0) * ei)
            .sum();
        w_step + t * step_step - C * loss
    };
    if slope(1.0) <= 0.0 {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    for _ in 0..BISECTIONS {
        let mid = 0.5 * (lo + hi);
        if slope(mid) <= 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// `K x`, column by column as faer stores `K`; each entry sums over `j` in order.
fn mul(k: MatRef<'_, f64>, x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; k.nrows()];
    for (j, xj) in x.iter().enumerate() {
        for (i, yi) in y.iter_mut().enumerate() {
            *yi += k[(i, j)] * xj;
        }
    }
    y
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `1 / (1 + exp(-x))` without overflow.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `σ(x)·σ(-x)`, the logistic curvature, without overflow.
fn curvature(x: f64) -> f64 {
    let e = (-x.abs()).exp();
    e / ((1.0 + e) * (1.0 + e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `|∇f| / |w|` at `w`, for the differences `d`.
    fn relative_gradient(d: &Mat<f64>, w: &[f64]) -> f64 {
        let (n, h) = d.shape();
        let mut grad = w.to_vec();
        for i in 0..n {
            let m: f64 = (0..h).map(|k| d[(i, k)] * w[k]).sum();
            let s = sigmoid(-m / 2.0);
            for (k, g) in grad.iter_mut().enumerate() {
                *g -= C * s * d[(i, k)];
            }
        }
        (dot(&grad, &grad) / dot(w, w)).sqrt()
    }

    #[test]
    fn the_coefficient_is_where_the_gradient_vanishes() {
        // Wide and tall, well and badly scaled, and with a repeated pair (singular Gram).
        let shapes = [(5, 40, 1.0), (40, 5, 1.0), (8, 30, 300.0), (6, 6, 0.01)];
        for (n, h, scale) in shapes {
            let d = Mat::from_fn(n, h, |i, k| {
                let i = if i == n - 1 { 0 } else { i };
                scale * (((i * 31 + k * 17) % 13) as f64 - 6.0 + 0.3 * (i as f64 + 1.0))
            });
            let w = coefficients(d.as_ref()).unwrap();
            let g = relative_gradient(&d, &w);
            assert!(g < 1e-9, "{n}x{h} at scale {scale}: {g:e}");
        }
    }

    #[test]
    fn one_dimension_matches_the_scalar_optimum() {
        // One pair with difference d: w = C·σ(-w·d/2)·d, solved by bisection.
        let d = 3.0;
        let (mut lo, mut hi) = (0.0f64, 10.0f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if mid - C * sigmoid(-mid * d / 2.0) * d < 0.0 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let w = coefficients(Mat::from_fn(1, 1, |_, _| d).as_ref()).unwrap();
        assert!((w[0] - lo).abs() < 1e-12, "{} vs {lo}", w[0]);
    }

    #[test]
    fn zero_differences_give_the_zero_coefficient() {
        let w = coefficients(Mat::<f64>::zeros(3, 4).as_ref()).unwrap();
        assert_eq!(w, [0.0; 4]);
    }

    #[test]
    fn the_sigmoids_do_not_overflow() {
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(curvature(1000.0), 0.0);
        assert!((curvature(0.0) - 0.25).abs() < 1e-16);
        assert!((sigmoid(0.3) + sigmoid(-0.3) - 1.0).abs() < 1e-16);
    }
}
