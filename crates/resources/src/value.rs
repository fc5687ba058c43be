//! Resource values: scalars, port-style ranges and sets, with Mesos's arithmetic.
//!
//! [`Ranges`] are kept normalised (sorted, overlapping and adjacent ranges coalesced), which is
//! the form Mesos reaches after any arithmetic; equality and containment are therefore linear.
//! [`Set`] keeps insertion order (Mesos prints it that way) and never holds duplicates.

use std::fmt;

use crate::Scalar;

/// An inclusive range `[begin, end]` with `begin <= end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Range {
    begin: u64,
    end: u64,
}

impl Range {
    /// `[begin, end]`; `None` when `begin > end`.
    #[must_use]
    pub const fn new(begin: u64, end: u64) -> Option<Range> {
        if begin <= end {
            Some(Range { begin, end })
        } else {
            None
        }
    }

    /// First value.
    #[must_use]
    pub const fn begin(self) -> u64 {
        self.begin
    }

    /// Last value.
    #[must_use]
    pub const fn end(self) -> u64 {
        self.end
    }
}

/// A normalised set of ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ranges(Vec<Range>);

impl Ranges {
    /// Builds normalised ranges from any ranges (overlaps allowed: this is the union).
    #[must_use]
    pub fn new(ranges: impl IntoIterator<Item = Range>) -> Ranges {
        let mut v: Vec<Range> = ranges.into_iter().collect();
        v.sort_unstable();
        Ranges(coalesce_sorted(v))
    }

    /// The ranges, sorted and coalesced.
    #[must_use]
    pub fn ranges(&self) -> &[Range] {
        &self.0
    }

    /// True when no value is covered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of values covered (saturating).
    #[must_use]
    pub fn len(&self) -> u64 {
        self.0.iter().fold(0u64, |n, r| {
            n.saturating_add(r.end - r.begin).saturating_add(1)
        })
    }

    /// Union (Mesos `+`: coalescing, adjacent ranges merge).
    #[must_use]
    pub fn union(&self, other: &Ranges) -> Ranges {
        let mut out = Vec::with_capacity(self.0.len() + other.0.len());
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => {
                    if x <= y {
                        a.next()
                    } else {
                        b.next()
                    }
                }
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            if let Some(&r) = next {
                push_coalescing(&mut out, r);
            }
        }
        Ranges(out)
    }

    /// Difference (Mesos `-`: allowed even when `other` is not a subset).
    #[must_use]
    pub fn difference(&self, other: &Ranges) -> Ranges {
        let mut out = Vec::with_capacity(self.0.len());
        let mut j = 0usize;
        let sub = &other.0;
        for &r in &self.0 {
            let mut begin = r.begin;
            let end = r.end;
            // Skip subtrahend ranges entirely before this one.
            while sub.get(j).is_some_and(|s| s.end < begin) {
                j += 1;
            }
            let mut k = j;
            let mut alive = true;
            while let Some(s) = sub.get(k) {
                if s.begin > end {
                    break;
                }
                if s.begin > begin {
                    out.push(Range {
                        begin,
                        end: s.begin - 1,
                    });
                }
                if s.end >= end {
                    alive = false;
                    break;
                }
                begin = s.end + 1;
                k += 1;
            }
            if alive {
                out.push(Range { begin, end });
            }
        }
        Ranges(out)
    }

    /// In-place union with one range: a binary search, then the touching ranges are replaced
    /// by their union where they lie, without a new allocation unless the vector grows.
    fn insert_range(&mut self, r: Range) {
        let v = &mut self.0;
        // First range that could touch r: end + 1 >= r.begin.
        let lo = v.partition_point(|x| x.end.saturating_add(1) < r.begin);
        // Ranges from lo that start at or before r.end + 1 touch r.
        let hi = lo
            + v.get(lo..)
                .unwrap_or_default()
                .partition_point(|x| x.begin <= r.end.saturating_add(1));
        let merged = v
            .get(lo..hi)
            .unwrap_or_default()
            .iter()
            .fold(r, |acc, x| Range {
                begin: acc.begin.min(x.begin),
                end: acc.end.max(x.end),
            });
        replace_ranges(v, lo, hi, &[merged]);
    }

    /// In-place difference with one range.
    fn remove_range(&mut self, r: Range) {
        let v = &mut self.0;
        let lo = v.partition_point(|x| x.end < r.begin);
        let hi = lo
            + v.get(lo..)
                .unwrap_or_default()
                .partition_point(|x| x.begin <= r.end);
        let (Some(first), Some(last)) = (
            v.get(lo).copied(),
            hi.checked_sub(1).and_then(|h| v.get(h)).copied(),
        ) else {
            return;
        };
        if hi <= lo {
            return;
        }
        let mut keep = [r; 2];
        let mut n = 0;
        if first.begin < r.begin {
            keep[0] = Range {
                begin: first.begin,
                end: r.begin - 1,
            };
            n = 1;
        }
        if last.end > r.end
            && let Some(k) = keep.get_mut(n)
        {
            *k = Range {
                begin: r.end + 1,
                end: last.end,
            };
            n += 1;
        }
        replace_ranges(v, lo, hi, keep.get(..n).unwrap_or_default());
    }

    /// `self = self ∪ other`, in place when `other` is small.
    pub fn union_assign(&mut self, other: &Ranges) {
        match (self.0.as_mut_slice(), other.0.as_slice()) {
            (_, []) => return,
            ([], [r]) => {
                self.0.push(*r);
                return;
            }
            // One range to one range it touches: merged in place.
            ([s], [r])
                if r.begin <= s.end.saturating_add(1) && s.begin <= r.end.saturating_add(1) =>
            {
                s.begin = s.begin.min(r.begin);
                s.end = s.end.max(r.end);
                return;
            }
            _ => {}
        }
        if other.0.len() <= 4 {
            for &r in &other.0 {
                self.insert_range(r);
            }
        } else {
            *self = self.union(other);
        }
    }

    /// `self = self \ other`, in place when `other` is small.
    pub fn difference_assign(&mut self, other: &Ranges) {
        // One range from one range (a task's port from an agent's, or all of it): in place.
        if let ([s], [r]) = (self.0.as_mut_slice(), other.0.as_slice()) {
            let (s_begin, s_end) = (s.begin, s.end);
            if r.end < s_begin || r.begin > s_end {
                return;
            }
            match (r.begin <= s_begin, r.end >= s_end) {
                (true, true) => self.0.clear(),
                (true, false) => s.begin = r.end + 1,
                (false, true) => s.end = r.begin - 1,
                (false, false) => {
                    s.end = r.begin - 1;
                    self.0.push(Range {
                        begin: r.end + 1,
                        end: s_end,
                    });
                }
            }
            return;
        }
        if other.0.len() <= 4 {
            for &r in &other.0 {
                self.remove_range(r);
            }
        } else {
            *self = self.difference(other);
        }
    }

    /// Subset test (Mesos `<=`): every range of `self` lies inside one range of `other`.
    #[must_use]
    pub fn is_subset(&self, other: &Ranges) -> bool {
        if let ([r], [o]) = (self.0.as_slice(), other.0.as_slice()) {
            return o.begin <= r.begin && r.end <= o.end;
        }
        // Both sorted and coalesced: one walk, `rest` starting at the first range of `other`
        // that does not end before the range of `self` at hand.
        let mut rest = other.0.as_slice();
        for r in &self.0 {
            loop {
                let [o, tail @ ..] = rest else {
                    return false;
                };
                if o.end >= r.begin {
                    if o.begin > r.begin || r.end > o.end {
                        return false;
                    }
                    break;
                }
                rest = tail;
            }
        }
        true
    }
}

/// Replaces `v[lo..hi]` by `with` in place: overwritten where the lengths agree, the tail
/// moved once otherwise (`Vec::splice` costs more than the work for one or two ranges).
fn replace_ranges(v: &mut Vec<Range>, lo: usize, hi: usize, with: &[Range]) {
    let old = hi.saturating_sub(lo);
    let common = old.min(with.len());
    if let (Some(dst), Some(src)) = (v.get_mut(lo..lo + common), with.get(..common)) {
        dst.copy_from_slice(src);
    }
    if old > common {
        v.drain(lo + common..hi);
    } else if let Some(rest) = with.get(common..)
        && !rest.is_empty()
    {
        let at = (lo + common).min(v.len());
        v.splice(at..at, rest.iter().copied());
    }
}

fn push_coalescing(out: &mut Vec<Range>, r: Range) {
    if let Some(last) = out.last_mut()
        && r.begin <= last.end.saturating_add(1)
    {
        last.end = last.end.max(r.end);
        return;
    }
    out.push(r);
}

/// Coalesces sorted ranges in place (no second buffer: a list of a million ranges is 16 MB).
fn coalesce_sorted(mut v: Vec<Range>) -> Vec<Range> {
    let mut kept = 0usize;
    for i in 0..v.len() {
        let Some(&r) = v.get(i) else { break };
        if let Some(last) = kept.checked_sub(1).and_then(|k| v.get_mut(k))
            && r.begin <= last.end.saturating_add(1)
        {
            last.end = last.end.max(r.end);
            continue;
        }
        if let Some(slot) = v.get_mut(kept) {
            *slot = r;
        }
        kept += 1;
    }
    v.truncate(kept);
    v
}

impl fmt::Display for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}-{}", r.begin, r.end)?;
        }
        f.write_str("]")
    }
}

/// A set of distinct strings, in insertion order.
#[derive(Clone, Debug, Default, Eq)]
pub struct Set(Vec<String>);

/// Sets larger than this use a hash set for membership, keeping every operation linear.
const SET_HASH_THRESHOLD: usize = 16;

fn membership(items: &[String]) -> Option<std::collections::HashSet<&str>> {
    (items.len() > SET_HASH_THRESHOLD).then(|| items.iter().map(String::as_str).collect())
}

fn member(items: &[String], index: Option<&std::collections::HashSet<&str>>, item: &str) -> bool {
    match index {
        Some(set) => set.contains(item),
        None => items.iter().any(|i| i == item),
    }
}

impl Set {
    /// A set from items; duplicates are dropped (validation refuses them earlier).
    #[must_use]
    pub fn new(items: impl IntoIterator<Item = String>) -> Set {
        let all: Vec<String> = items.into_iter().collect();
        let mut seen: std::collections::HashSet<&str> =
            std::collections::HashSet::with_capacity(all.len());
        let keep: Vec<bool> = all.iter().map(|s| seen.insert(s.as_str())).collect();
        drop(seen);
        Set(all
            .into_iter()
            .zip(keep)
            .filter_map(|(s, k)| k.then_some(s))
            .collect())
    }

    /// The items.
    #[must_use]
    pub fn items(&self) -> &[String] {
        &self.0
    }

    /// True when empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Union: left items, then new right items.
    #[must_use]
    pub fn union(&self, other: &Set) -> Set {
        let index = membership(&self.0);
        let added: Vec<String> = other
            .0
            .iter()
            .filter(|i| !member(&self.0, index.as_ref(), i))
            .cloned()
            .collect();
        let mut out = self.0.clone();
        out.extend(added);
        Set(out)
    }

    /// Items of `self` not in `other`.
    #[must_use]
    pub fn difference(&self, other: &Set) -> Set {
        let index = membership(&other.0);
        Set(self
            .0
            .iter()
            .filter(|i| !member(&other.0, index.as_ref(), i))
            .cloned()
            .collect())
    }

    /// Every item of `self` is in `other`.
    #[must_use]
    pub fn is_subset(&self, other: &Set) -> bool {
        if self.0.len() > other.0.len() {
            return false;
        }
        let index = membership(&other.0);
        self.0.iter().all(|i| member(&other.0, index.as_ref(), i))
    }
}

/// Order-insensitive (Mesos compares positionally, `research` Q-2; berth compares as sets).
impl PartialEq for Set {
    fn eq(&self, other: &Set) -> bool {
        self.0.len() == other.0.len() && self.is_subset(other)
    }
}

impl std::hash::Hash for Set {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Order-insensitive, consistent with `PartialEq`.
        let mut acc = 0u64;
        for item in &self.0 {
            acc = acc.wrapping_add(crate::hash::fx_str(item));
        }
        state.write_u64(acc);
    }
}

impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.0.join(", "))
    }
}

/// The value of a resource.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// `SCALAR`.
    Scalar(Scalar),
    /// `RANGES`.
    Ranges(Ranges),
    /// `SET`.
    Set(Set),
}

/// The type of a [`Value`], `Value.Type` in Mesos.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// `SCALAR`.
    Scalar,
    /// `RANGES`.
    Ranges,
    /// `SET`.
    Set,
}

impl Value {
    /// The type.
    #[must_use]
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Scalar(_) => ValueType::Scalar,
            Value::Ranges(_) => ValueType::Ranges,
            Value::Set(_) => ValueType::Set,
        }
    }

    /// Mesos `isEmpty`: zero scalar, no ranges, no items.
    #[must_use]
    #[inline]
    pub fn is_empty(&self) -> bool {
        match self {
            Value::Scalar(s) => s.is_zero(),
            Value::Ranges(r) => r.is_empty(),
            Value::Set(s) => s.is_empty(),
        }
    }

    /// `self <= other` for values of the same type; `false` across types.
    #[must_use]
    #[inline]
    pub fn le(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Scalar(a), Value::Scalar(b)) => a <= b,
            // One range in one range (a task's port in an agent's).
            (Value::Ranges(Ranges(a)), Value::Ranges(Ranges(b)))
                if let ([r], [o]) = (a.as_slice(), b.as_slice()) =>
            {
                o.begin <= r.begin && r.end <= o.end
            }
            _ => self.le_other(other),
        }
    }

    /// [`Value::le`] of ranges and sets, out of line.
    #[inline(never)]
    fn le_other(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Scalar(a), Value::Scalar(b)) => a <= b,
            (Value::Ranges(a), Value::Ranges(b)) => a.is_subset(b),
            (Value::Set(a), Value::Set(b)) => a.is_subset(b),
            _ => false,
        }
    }

    /// Adds `other` in place (same type; other types are ignored).
    #[inline]
    pub fn add_assign(&mut self, other: &Value) {
        match (self, other) {
            (Value::Scalar(a), Value::Scalar(b)) => *a += *b,
            (this, _) => this.add_assign_other(other),
        }
    }

    /// [`Value::add_assign`] of ranges and sets, out of line.
    #[inline(never)]
    fn add_assign_other(&mut self, other: &Value) {
        match (self, other) {
            (Value::Scalar(a), Value::Scalar(b)) => *a += *b,
            (Value::Ranges(a), Value::Ranges(b)) => a.union_assign(b),
            (Value::Set(a), Value::Set(b)) => *a = a.union(b),
            _ => {}
        }
    }

    /// Empties the value in place, keeping its type and its buffers (`Resources` keeps an
    /// emptied entry for its metadata's next resource).
    #[inline]
    pub(crate) fn clear(&mut self) {
        match self {
            Value::Scalar(s) => *s = Scalar::ZERO,
            Value::Ranges(r) => r.0.clear(),
            Value::Set(s) => s.0.clear(),
        }
    }

    /// `*self = other.clone()`, reusing `self`'s buffer when the types agree.
    #[inline]
    pub(crate) fn assign_from(&mut self, other: &Value) {
        match (self, other) {
            (Value::Scalar(a), Value::Scalar(b)) => *a = *b,
            (Value::Ranges(Ranges(a)), Value::Ranges(Ranges(b))) if b.len() == 1 => {
                a.clear();
                a.extend_from_slice(b);
            }
            (this, _) => this.assign_from_other(other),
        }
    }

    /// [`Value::assign_from`] of ranges and sets, out of line.
    #[inline(never)]
    fn assign_from_other(&mut self, other: &Value) {
        match (self, other) {
            (Value::Scalar(a), Value::Scalar(b)) => *a = *b,
            (Value::Ranges(a), Value::Ranges(b)) => {
                // Mostly one range (a task's port): no copy loop for it.
                if let [r] = b.0.as_slice() {
                    a.0.clear();
                    a.0.push(*r);
                } else {
                    a.0.clone_from(&b.0);
                }
            }
            (Value::Set(a), Value::Set(b)) => a.0.clone_from(&b.0),
            (this, _) => *this = other.clone(),
        }
    }

    /// Subtracts `other` in place (same type; other types are ignored).
    #[inline]
    pub fn sub_assign(&mut self, other: &Value) {
        match (self, other) {
            (Value::Scalar(a), Value::Scalar(b)) => *a -= *b,
            (this, _) => this.sub_assign_other(other),
        }
    }

    /// [`Value::sub_assign`] of ranges and sets, out of line.
    #[inline(never)]
    fn sub_assign_other(&mut self, other: &Value) {
        match (self, other) {
            (Value::Scalar(a), Value::Scalar(b)) => *a -= *b,
            (Value::Ranges(a), Value::Ranges(b)) => a.difference_assign(b),
            (Value::Set(a), Value::Set(b)) => *a = a.difference(b),
            _ => {}
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Scalar(s) => s.fmt(f),
            Value::Ranges(r) => r.fmt(f),
            Value::Set(s) => s.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(v: &[(u64, u64)]) -> Ranges {
        Ranges::new(v.iter().filter_map(|&(b, e)| Range::new(b, e)))
    }

    #[test]
    fn ranges_arithmetic() {
        assert_eq!(rs(&[(1, 2)]).union(&rs(&[(3, 4)])), rs(&[(1, 4)]));
        assert_eq!(rs(&[(1, 2), (3, 4)]).ranges().len(), 1);
        assert_eq!(
            rs(&[(20000, 40000)]).difference(&rs(&[(10000, 20000), (30000, 50000)])),
            rs(&[(20001, 29999)])
        );
        assert_eq!(
            rs(&[(1, 10)]).difference(&rs(&[(3, 4), (6, 6)])),
            rs(&[(1, 2), (5, 5), (7, 10)])
        );
        assert!(rs(&[(2, 3), (5, 6)]).is_subset(&rs(&[(1, 10)])));
        assert!(!rs(&[(2, 3), (5, 12)]).is_subset(&rs(&[(1, 10)])));
        assert!(!rs(&[(1, 10)]).is_subset(&rs(&[(1, 4), (6, 10)])));
        assert_eq!(
            rs(&[(0, u64::MAX)]).difference(&rs(&[(0, u64::MAX)])),
            rs(&[])
        );
        assert_eq!(rs(&[(0, u64::MAX)]).len(), u64::MAX);
    }

    #[test]
    fn in_place_ops_agree_with_merges() {
        let cases: [&[(u64, u64)]; 5] = [
            &[],
            &[(1, 5)],
            &[(1, 2), (4, 6), (10, 20)],
            &[(0, 0), (u64::MAX, u64::MAX)],
            &[(3, 3), (5, 5), (7, 9)],
        ];
        let singles = [
            (0, 0),
            (1, 1),
            (2, 4),
            (3, 3),
            (5, 11),
            (6, 9),
            (0, 100),
            (21, 21),
            (u64::MAX - 1, u64::MAX),
        ];
        for base in cases {
            for &(b, e) in &singles {
                let a = rs(base);
                let x = rs(&[(b, e)]);
                let mut u = a.clone();
                u.union_assign(&x);
                assert_eq!(u, a.union(&x), "{a} + {x}");
                let mut d = a.clone();
                d.difference_assign(&x);
                assert_eq!(d, a.difference(&x), "{a} - {x}");
            }
        }
    }

    #[test]
    fn sets() {
        let a = Set::new(["a".to_string(), "b".to_string()]);
        let b = Set::new(["b".to_string(), "a".to_string()]);
        assert_eq!(a, b);
        assert!(a.is_subset(&b));
        let c = Set::new(["c".to_string()]);
        assert_eq!(a.union(&c).items().len(), 3);
        assert_eq!(a.union(&c).difference(&b), c);
    }
}

#[cfg(test)]
mod large_sets {
    use super::*;

    #[test]
    fn large_sets_are_handled_with_hash_membership() {
        let n = 200_000;
        let a = Set::new((0..n).map(|i| format!("item-{i}")));
        let b = Set::new((n / 2..n + n / 2).map(|i| format!("item-{i}")));
        assert_eq!(a.union(&b).items().len(), n + n / 2);
        assert_eq!(a.difference(&b).items().len(), n / 2);
        assert!(!a.is_subset(&b));
        assert!(a.difference(&b).is_subset(&a));
        assert_eq!(
            Set::new(a.items().iter().chain(a.items()).cloned())
                .items()
                .len(),
            n
        );
    }
}
