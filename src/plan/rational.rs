//! A tiny exact rational number, enough to reproduce Python's `fractions.Fraction` for frame rates.

use std::fmt;

/// A reduced fraction with a positive denominator (Python `Fraction` normal form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ratio {
    num: i64,
    den: i64,
}

fn gcd(a: i64, b: i64) -> i64 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Ratio {
    /// `None` when `den == 0` (Python raises `ZeroDivisionError` there).
    pub fn new(num: i64, den: i64) -> Option<Ratio> {
        if den == 0 {
            return None;
        }
        let sign = if den < 0 { -1 } else { 1 };
        let g = gcd(num, den).max(1);
        Some(Ratio {
            num: sign * num / g,
            den: sign * den / g,
        })
    }

    pub fn integer(n: i64) -> Ratio {
        Ratio { num: n, den: 1 }
    }

    pub fn numer(self) -> i64 {
        self.num
    }

    pub fn denom(self) -> i64 {
        self.den
    }

    /// `self / 2`, kept exact (30000/1001 stays a fraction, 120 becomes 60).
    pub fn halve(self) -> Ratio {
        Ratio::new(self.num, self.den * 2).expect("denominator stays non-zero")
    }

    /// `self > n` without floating point.
    pub fn gt_int(self, n: i64) -> bool {
        self.num > n * self.den
    }

    /// Python `int(self * k)`: truncation toward zero.
    pub fn mul_int_trunc(self, k: i64) -> i64 {
        (self.num * k) / self.den
    }
}

/// Python `str(Fraction)`: `"30"` for integers, `"30000/1001"` otherwise.
impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduces_and_prints_like_python_fraction() {
        assert_eq!(Ratio::new(30, 1).unwrap().to_string(), "30");
        assert_eq!(Ratio::new(60, 2).unwrap().to_string(), "30");
        assert_eq!(Ratio::new(30000, 1001).unwrap().to_string(), "30000/1001");
        assert_eq!(Ratio::new(120000, 2002).unwrap().to_string(), "60000/1001");
        assert_eq!(Ratio::new(1, -2).unwrap().to_string(), "-1/2");
        assert_eq!(Ratio::new(0, 5).unwrap().to_string(), "0");
        assert_eq!(Ratio::new(3, 0), None);
    }

    #[test]
    fn halving_comparison_and_truncation() {
        let f = Ratio::new(120000, 1001).unwrap();
        assert!(f.gt_int(60));
        assert_eq!(f.halve().to_string(), "60000/1001");
        assert!(!f.halve().gt_int(60));
        assert_eq!(f.halve().mul_int_trunc(4), 239);
        assert_eq!(Ratio::integer(25).mul_int_trunc(4), 100);
        assert_eq!(Ratio::integer(120).halve(), Ratio::integer(60));
    }
}
