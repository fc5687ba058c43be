//! Fixed-point scalar quantities with Mesos's three-decimal semantics.
//!
//! Mesos converts every scalar to fixed point before it compares or adds it:
//! `toFixed(v) = llround(v * 1000)` (IEEE multiply, then round half away from zero) and back
//! with `trunc(f / 1000) + (f % 1000) / 1000.0`. [`Scalar`] stores the fixed-point value, so
//! `0.1 + 0.2 == 0.3`, `1.5015` becomes `1.502` and every comparison is exact.

use std::fmt;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};

use crate::error::ScalarError;

/// Largest magnitude accepted from a `double`: beyond 2^53 milli-units a double no longer
/// holds every integer, so the fixed-point value would not be exact.
const MAX_MILLI: f64 = 9_007_199_254_740_992.0;

/// A scalar resource quantity in thousandths (milli-units), exactly as Mesos computes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scalar(i64);

impl Scalar {
    /// Zero.
    pub const ZERO: Scalar = Scalar(0);

    /// A scalar from milli-units (`Scalar::from_milli(1500)` is 1.5).
    #[must_use]
    pub const fn from_milli(milli: i64) -> Self {
        Scalar(milli)
    }

    /// A scalar from whole units (`Scalar::from_units(128)` is 128.0).
    #[must_use]
    pub const fn from_units(units: i64) -> Self {
        Scalar(units.saturating_mul(1000))
    }

    /// Converts a double the way Mesos does (`llround(v * 1000)`).
    ///
    /// # Errors
    /// [`ScalarError::NotFinite`] for NaN and infinities (Mesos's behaviour is undefined there),
    /// [`ScalarError::OutOfRange`] when the fixed-point value would not be exact.
    pub fn from_f64(value: f64) -> Result<Self, ScalarError> {
        if !value.is_finite() {
            return Err(ScalarError::NotFinite(value));
        }
        let scaled = (value * 1000.0).round();
        if scaled.abs() > MAX_MILLI {
            return Err(ScalarError::OutOfRange(value));
        }
        // The range check above makes the cast exact.
        #[allow(clippy::cast_possible_truncation)]
        Ok(Scalar(scaled as i64))
    }

    /// The value as Mesos prints it: `trunc(f / 1000) + (f % 1000) / 1000.0`.
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn as_f64(self) -> f64 {
        (self.0 / 1000) as f64 + (self.0 % 1000) as f64 / 1000.0
    }

    /// The fixed-point value in milli-units.
    #[must_use]
    pub const fn milli(self) -> i64 {
        self.0
    }

    /// True for exactly zero.
    #[must_use]
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// True when the fixed-point value is a whole number.
    #[must_use]
    pub const fn is_integral(self) -> bool {
        self.0 % 1000 == 0
    }

    /// Addition that reports overflow instead of wrapping.
    #[must_use]
    pub const fn checked_add(self, other: Scalar) -> Option<Scalar> {
        match self.0.checked_add(other.0) {
            Some(v) => Some(Scalar(v)),
            None => None,
        }
    }
}

impl Add for Scalar {
    type Output = Scalar;
    fn add(self, rhs: Scalar) -> Scalar {
        Scalar(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Scalar {
    fn add_assign(&mut self, rhs: Scalar) {
        self.0 = self.0.saturating_add(rhs.0);
    }
}

impl Sub for Scalar {
    type Output = Scalar;
    fn sub(self, rhs: Scalar) -> Scalar {
        Scalar(self.0.saturating_sub(rhs.0))
    }
}

impl SubAssign for Scalar {
    fn sub_assign(&mut self, rhs: Scalar) {
        self.0 = self.0.saturating_sub(rhs.0);
    }
}

impl Neg for Scalar {
    type Output = Scalar;
    fn neg(self) -> Scalar {
        Scalar(self.0.saturating_neg())
    }
}

impl fmt::Display for Scalar {
    /// Up to three decimals without trailing zeros, as Mesos prints scalars (`1.5`, `128`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (int, frac) = (abs / 1000, abs % 1000);
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let digits = format!("{frac:03}");
            write!(f, "{sign}{int}.{}", digits.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: f64) -> Scalar {
        Scalar::from_f64(v).unwrap_or(Scalar::ZERO)
    }

    #[test]
    fn rounding_matches_mesos() {
        assert_eq!(s(0.1) + s(0.2), s(0.3));
        assert_eq!(s(1.5015).milli(), 1502);
        assert_eq!(s(1.5011).milli(), 1501);
        assert_eq!(s(-1.5015).milli(), -1502);
        assert_eq!(s(0.0004).milli(), 0);
        assert_eq!(s(0.0005).milli(), 1);
        assert_eq!(s(24.0) - s(0.1) - s(0.1), s(23.8));
        assert!((s(23.8).as_f64() - 23.8).abs() < f64::EPSILON);
    }

    #[test]
    fn non_finite_and_huge_are_rejected() {
        assert!(matches!(
            Scalar::from_f64(f64::NAN),
            Err(ScalarError::NotFinite(_))
        ));
        assert!(matches!(
            Scalar::from_f64(f64::INFINITY),
            Err(ScalarError::NotFinite(_))
        ));
        assert!(matches!(
            Scalar::from_f64(1e300),
            Err(ScalarError::OutOfRange(_))
        ));
    }

    #[test]
    fn display() {
        assert_eq!(s(1.5).to_string(), "1.5");
        assert_eq!(s(128.0).to_string(), "128");
        assert_eq!(s(0.001).to_string(), "0.001");
        assert_eq!(s(-2.25).to_string(), "-2.25");
    }
}
