//! `/proc/<pid>/mountinfo`: parser, owned table and indexed queries.
//!
//! This module owns the ground truth of every mount decision: "is `P` a mount point", "what is
//! mounted at or below `P`", "is mount id `N` still there". The format (proc(5)):
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt/parent\040dir rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2)(3)   (4)   (5)               (6)      (7)      (8) (9)   (10)      (11)
//! ```
//!
//! 1 mount id, 2 parent id, 3 `major:minor`, 4 root of the mount inside its filesystem, 5 mount
//! point, 6 per-mount options, 7 zero or more optional fields (`shared:N`, `master:N`,
//! `propagate_from:N`, `unbindable`), 8 a `-` separator, 9 filesystem type, 10 source, 11
//! per-superblock options. The kernel escapes space, tab, newline and backslash in paths as
//! `\040`, `\011`, `\012` and `\134`; every `\ooo` octal escape is decoded here (procfs-core's
//! parser does not decode `\040`, which is why berth has its own).
//!
//! A [`MountTable`] keeps the file's bytes once; entries are spans into it (decoded copies are
//! appended only for fields that contain an escape), so parsing costs a fraction of the kernel's
//! time to produce the text. Queries by path use an index sorted so that every subtree is one
//! contiguous range (`/` sorts before every other byte): `is_mount_point` and
//! `mounts_at_or_below` cost O(log n) (+ the size of the answer). The index is built on the
//! first query, so a table read only to be iterated pays nothing for it.
//!
//! Read the table of the *calling thread* ([`MountTable::read_current`], which reads
//! `/proc/thread-self/mountinfo`): a thread that entered another mount namespace does not see
//! its own mounts in `/proc/self/mountinfo`, which follows the main thread.

use std::cmp::Ordering;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{MountError, Result};

/// Where the calling thread's mount table is.
pub const THREAD_SELF_MOUNTINFO: &str = "/proc/thread-self/mountinfo";

/// A span of the table's buffer.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    end: u32,
}

/// One parsed line, as spans into [`MountTable::buf`].
#[derive(Debug, Clone)]
struct Entry {
    mount_id: u64,
    parent_id: u64,
    major: u32,
    minor: u32,
    root: Span,
    mount_point: Span,
    options: Span,
    optional: Span,
    fs_type: Span,
    source: Span,
    super_options: Span,
    shared: Option<u32>,
    master: Option<u32>,
    propagate_from: Option<u32>,
    unbindable: bool,
}

const EMPTY_SPAN: Span = Span { start: 0, end: 0 };
static EMPTY_ENTRY: Entry = Entry {
    mount_id: 0,
    parent_id: 0,
    major: 0,
    minor: 0,
    root: EMPTY_SPAN,
    mount_point: EMPTY_SPAN,
    options: EMPTY_SPAN,
    optional: EMPTY_SPAN,
    fs_type: EMPTY_SPAN,
    source: EMPTY_SPAN,
    super_options: EMPTY_SPAN,
    shared: None,
    master: None,
    propagate_from: None,
    unbindable: false,
};

/// A parsed mount table: every line of one mountinfo file, in the kernel's order (parents
/// before children, and a mount stacked on another after it).
#[derive(Debug)]
pub struct MountTable {
    buf: Vec<u8>,
    entries: Vec<Entry>,
    by_path: OnceLock<Vec<u32>>,
    by_id: OnceLock<Vec<u32>>,
}

impl Clone for MountTable {
    fn clone(&self) -> Self {
        MountTable {
            buf: self.buf.clone(),
            entries: self.entries.clone(),
            by_path: OnceLock::new(),
            by_id: OnceLock::new(),
        }
    }
}

/// One optional field (column 7) of a mountinfo line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionalField<'a> {
    /// `shared:N`: the mount is in peer group N.
    Shared(u32),
    /// `master:N`: the mount is a slave of peer group N.
    Master(u32),
    /// `propagate_from:N`: receives from peer group N (the closest dominant one visible).
    PropagateFrom(u32),
    /// `unbindable`.
    Unbindable,
    /// A field this parser does not know (future kernels), kept verbatim.
    Other(&'a str),
}

impl<'a> OptionalField<'a> {
    fn parse(field: &'a str) -> Self {
        let num = |prefix: &str| {
            field
                .strip_prefix(prefix)
                .and_then(|n| n.parse::<u32>().ok())
        };
        if let Some(n) = num("shared:") {
            OptionalField::Shared(n)
        } else if let Some(n) = num("master:") {
            OptionalField::Master(n)
        } else if let Some(n) = num("propagate_from:") {
            OptionalField::PropagateFrom(n)
        } else if field == "unbindable" {
            OptionalField::Unbindable
        } else {
            OptionalField::Other(field)
        }
    }
}

/// A view of one mount of a [`MountTable`].
#[derive(Debug, Clone, Copy)]
pub struct MountEntry<'a> {
    table: &'a MountTable,
    entry: &'a Entry,
}

impl<'a> MountEntry<'a> {
    fn bytes(&self, s: Span) -> &'a [u8] {
        self.table.span(s)
    }
    /// Column 1: the mount id (unique while the mount exists; `statx(STATX_MNT_ID)` reports
    /// the same number).
    #[must_use]
    pub fn mount_id(&self) -> u64 {
        self.entry.mount_id
    }
    /// Column 2: the parent's mount id (itself for the root of the namespace's tree).
    #[must_use]
    pub fn parent_id(&self) -> u64 {
        self.entry.parent_id
    }
    /// Column 3: the device's major number.
    #[must_use]
    pub fn major(&self) -> u32 {
        self.entry.major
    }
    /// Column 3: the device's minor number.
    #[must_use]
    pub fn minor(&self) -> u32 {
        self.entry.minor
    }
    /// Column 4: the directory of the filesystem that is the root of this mount (decoded).
    #[must_use]
    pub fn root(&self) -> &'a Path {
        Path::new(OsStr::from_bytes(self.bytes(self.entry.root)))
    }
    /// Column 5: the mount point, relative to the reading process's root (decoded).
    #[must_use]
    pub fn mount_point(&self) -> &'a Path {
        Path::new(OsStr::from_bytes(self.bytes(self.entry.mount_point)))
    }
    /// Column 6: per-mount options (`rw,nosuid,nodev,relatime`).
    #[must_use]
    pub fn mount_options(&self) -> &'a OsStr {
        OsStr::from_bytes(self.bytes(self.entry.options))
    }
    /// Whether the per-mount options contain `option` (`ro`, `nosuid`, `nodev`, `noexec` ...).
    #[must_use]
    pub fn has_mount_option(&self, option: &str) -> bool {
        self.bytes(self.entry.options)
            .split(|&b| b == b',')
            .any(|o| o == option.as_bytes())
    }
    /// Whether this mount is read-only (the per-mount `ro` flag).
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        self.has_mount_option("ro")
    }
    /// Column 7: the optional fields, in order.
    pub fn optional_fields(&self) -> impl Iterator<Item = OptionalField<'a>> + 'a {
        let bytes = self.table.span(self.entry.optional);
        bytes
            .split(|&b| b == b' ')
            .filter(|f| !f.is_empty())
            .map(|f| OptionalField::parse(std::str::from_utf8(f).unwrap_or("")))
    }
    /// `shared:N`: the peer group this mount shares events with.
    #[must_use]
    pub fn shared(&self) -> Option<u32> {
        self.entry.shared
    }
    /// `master:N`: the peer group this mount is a slave of.
    #[must_use]
    pub fn master(&self) -> Option<u32> {
        self.entry.master
    }
    /// `propagate_from:N`.
    #[must_use]
    pub fn propagate_from(&self) -> Option<u32> {
        self.entry.propagate_from
    }
    /// `unbindable`.
    #[must_use]
    pub fn is_unbindable(&self) -> bool {
        self.entry.unbindable
    }
    /// The propagation type this entry shows.
    #[must_use]
    pub fn propagation(&self) -> crate::Propagation {
        use crate::Propagation;
        match (self.entry.shared, self.entry.master, self.entry.unbindable) {
            (_, _, true) => Propagation::Unbindable,
            (Some(_), _, _) => Propagation::Shared,
            (None, Some(_), _) => Propagation::Slave,
            (None, None, false) => Propagation::Private,
        }
    }
    /// Column 9: the filesystem type (`ext4`, `tmpfs`, `fuse.sshfs`).
    #[must_use]
    pub fn fs_type(&self) -> &'a OsStr {
        OsStr::from_bytes(self.bytes(self.entry.fs_type))
    }
    /// Column 10: the mount source (decoded; `none` when there is none).
    #[must_use]
    pub fn mount_source(&self) -> &'a OsStr {
        OsStr::from_bytes(self.bytes(self.entry.source))
    }
    /// Column 11: per-superblock options.
    #[must_use]
    pub fn super_options(&self) -> &'a OsStr {
        OsStr::from_bytes(self.bytes(self.entry.super_options))
    }
}

impl MountTable {
    /// Reads and parses the calling thread's table (`/proc/thread-self/mountinfo`).
    ///
    /// # Errors
    /// [`MountError::MountInfoRead`] or [`MountError::MountInfoParse`].
    pub fn read_current() -> Result<Self> {
        Self::read_file(Path::new(THREAD_SELF_MOUNTINFO))
    }

    /// Reads and parses the table of process (or thread) `pid` (`/proc/<pid>/mountinfo`).
    ///
    /// # Errors
    /// [`MountError::MountInfoRead`] or [`MountError::MountInfoParse`].
    pub fn read_pid(pid: i32) -> Result<Self> {
        Self::read_file(&PathBuf::from(format!("/proc/{pid}/mountinfo")))
    }

    /// Reads and parses a mountinfo file.
    ///
    /// # Errors
    /// [`MountError::MountInfoRead`] or [`MountError::MountInfoParse`].
    pub fn read_file(path: &Path) -> Result<Self> {
        let mut buf = Vec::new();
        read_mountinfo_into(path, &mut buf)?;
        Self::parse(buf)
    }

    /// Parses mountinfo text (taking ownership of the buffer; no copy unless escapes appear).
    ///
    /// # Errors
    /// [`MountError::MountInfoParse`] naming the first bad line.
    pub fn parse(text: impl Into<Vec<u8>>) -> Result<Self> {
        let mut buf: Vec<u8> = text.into();
        let raw_len = buf.len();
        if u32::try_from(raw_len).is_err() {
            return Err(MountError::MountInfoParse {
                line: 0,
                reason: "mountinfo text over 4 GiB",
            });
        }
        // Decoded copies of escaped fields go to `decoded`; their spans are marked and moved
        // behind the raw text at the end.
        let mut decoded: Vec<u8> = Vec::new();
        let mut fixups: Vec<(usize, u8)> = Vec::new();
        let mut entries = Vec::with_capacity(raw_len / 110 + 1);
        let mut start = 0usize;
        let mut line_no = 0usize;
        while start < raw_len {
            let end = buf
                .get(start..)
                .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
                .map_or(raw_len, |p| start + p);
            line_no += 1;
            if end > start {
                let (entry, flags) =
                    parse_line(&buf, start, end, &mut decoded).map_err(|reason| {
                        MountError::MountInfoParse {
                            line: line_no,
                            reason,
                        }
                    })?;
                if flags != 0 {
                    fixups.push((entries.len(), flags));
                }
                entries.push(entry);
            }
            start = end + 1;
        }
        if !fixups.is_empty() {
            let base = u32::try_from(raw_len).unwrap_or(u32::MAX);
            if u32::try_from(raw_len + decoded.len()).is_err() {
                return Err(MountError::MountInfoParse {
                    line: 0,
                    reason: "mountinfo text over 4 GiB",
                });
            }
            buf.extend_from_slice(&decoded);
            for (i, flags) in fixups {
                if let Some(e) = entries.get_mut(i) {
                    let shift = |s: &mut Span| {
                        s.start += base;
                        s.end += base;
                    };
                    if flags & F_ROOT != 0 {
                        shift(&mut e.root);
                    }
                    if flags & F_MOUNT_POINT != 0 {
                        shift(&mut e.mount_point);
                    }
                    if flags & F_SOURCE != 0 {
                        shift(&mut e.source);
                    }
                    if flags & F_SUPER != 0 {
                        shift(&mut e.super_options);
                    }
                }
            }
        }
        Ok(MountTable {
            buf,
            entries,
            by_path: OnceLock::new(),
            by_id: OnceLock::new(),
        })
    }

    fn span(&self, s: Span) -> &[u8] {
        self.buf
            .get(s.start as usize..s.end as usize)
            .unwrap_or(&[])
    }

    fn view(&self, i: u32) -> Option<MountEntry<'_>> {
        self.entries
            .get(i as usize)
            .map(|entry| MountEntry { table: self, entry })
    }

    /// Indices come from the table's own index, so they are always valid; an impossible miss
    /// yields an empty entry rather than a panic.
    fn view_exact(&self, i: u32) -> MountEntry<'_> {
        MountEntry {
            table: self,
            entry: self.entries.get(i as usize).unwrap_or(&EMPTY_ENTRY),
        }
    }

    /// Number of mounts.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every mount, in the kernel's order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = MountEntry<'_>> + ExactSizeIterator {
        self.entries
            .iter()
            .map(move |entry| MountEntry { table: self, entry })
    }

    fn path_index(&self) -> &[u32] {
        self.by_path.get_or_init(|| {
            let n = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
            let mut idx: Vec<u32> = (0..n).collect();
            // Stable: mounts stacked on one point keep the kernel's order (lowest first).
            idx.sort_by(|&a, &b| key_cmp(self.mount_point_bytes(a), self.mount_point_bytes(b)));
            idx
        })
    }

    fn mount_point_bytes(&self, i: u32) -> &[u8] {
        self.entries
            .get(i as usize)
            .map_or(&[][..], |e| self.span(e.mount_point))
    }

    /// The index range of mounts whose mount point is `path` (`below == false`) or at or
    /// below it (`below == true`).
    fn range(&self, path: &Path, below: bool) -> &[u32] {
        let Some(q) = normalize_query(path) else {
            return &[];
        };
        let idx = self.path_index();
        let lo = idx.partition_point(|&i| key_cmp(self.mount_point_bytes(i), &q) == Ordering::Less);
        let hi = if below {
            idx.partition_point(|&i| key_cmp_upper(self.mount_point_bytes(i), &q))
        } else {
            idx.partition_point(|&i| key_cmp(self.mount_point_bytes(i), &q) != Ordering::Greater)
        };
        idx.get(lo..hi.max(lo)).unwrap_or(&[])
    }

    /// Whether something is mounted at `path` (an absolute path; `.`, `//` and a trailing
    /// `/` are normalized, `..` is applied lexically). O(log n).
    #[must_use]
    pub fn is_mount_point(&self, path: &Path) -> bool {
        !self.range(path, false).is_empty()
    }

    /// The mounts at `path`, lowest first (several when mounts are stacked). O(log n + k).
    pub fn mounts_at(&self, path: &Path) -> impl DoubleEndedIterator<Item = MountEntry<'_>> {
        self.range(path, false).iter().filter_map(|&i| self.view(i))
    }

    /// The mount visible at `path` (the top of a stack), if `path` is a mount point.
    #[must_use]
    pub fn top_mount_at(&self, path: &Path) -> Option<MountEntry<'_>> {
        self.mounts_at(path).next_back()
    }

    /// The mounts at or below `path`, in path order (a parent before its subtree; stacked
    /// mounts lowest first). O(log n + k).
    pub fn mounts_at_or_below(
        &self,
        path: &Path,
    ) -> impl DoubleEndedIterator<Item = MountEntry<'_>> + ExactSizeIterator {
        self.range(path, true).iter().map(|&i| self.view_exact(i))
    }

    /// The mounts at or below `path` in the order to unmount them: deepest mount point first;
    /// on one mount point, the top of the stack first.
    #[must_use]
    pub fn unmount_order(&self, path: &Path) -> Vec<MountEntry<'_>> {
        let mut v: Vec<(usize, usize, MountEntry<'_>)> = self
            .range(path, true)
            .iter()
            .filter_map(|&i| {
                let e = self.view(i)?;
                let depth = self
                    .mount_point_bytes(i)
                    .iter()
                    .filter(|&&b| b == b'/')
                    .count();
                Some((depth, i as usize, e))
            })
            .collect();
        v.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        v.into_iter().map(|(_, _, e)| e).collect()
    }

    /// The mount with this id, if it is in the table. O(log n).
    #[must_use]
    pub fn by_mount_id(&self, mount_id: u64) -> Option<MountEntry<'_>> {
        let idx = self.by_id.get_or_init(|| {
            let n = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
            let mut idx: Vec<u32> = (0..n).collect();
            idx.sort_by_key(|&i| self.entries.get(i as usize).map_or(0, |e| e.mount_id));
            idx
        });
        let pos = idx
            .binary_search_by_key(&mount_id, |&i| {
                self.entries.get(i as usize).map_or(0, |e| e.mount_id)
            })
            .ok()?;
        self.view(*idx.get(pos)?)
    }
}

/// Reads a mountinfo file into `buf` (cleared first) with few system calls.
///
/// # Errors
/// [`MountError::MountInfoRead`].
pub fn read_mountinfo_into(path: &Path, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    let err = |source| MountError::MountInfoRead {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(err)?;
    if buf.capacity() < 64 * 1024 {
        buf.reserve(64 * 1024);
    }
    f.read_to_end(buf).map_err(err)?;
    Ok(())
}

const F_ROOT: u8 = 1;
const F_MOUNT_POINT: u8 = 2;
const F_SOURCE: u8 = 4;
const F_SUPER: u8 = 8;

/// Splits `buf[start..end]` on single spaces, starting at `*pos`.
fn next_field(buf: &[u8], pos: &mut usize, end: usize) -> Option<Span> {
    if *pos > end {
        return None;
    }
    let rest = buf.get(*pos..end)?;
    let len = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let s = Span {
        start: u32::try_from(*pos).ok()?,
        end: u32::try_from(*pos + len).ok()?,
    };
    *pos += len + 1;
    Some(s)
}

fn parse_num<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Decodes `\ooo` escapes of the field into `decoded` when it has any; returns whether it did
/// (then `span` is rewritten to point into `decoded`).
fn decode_field(buf: &[u8], span: &mut Span, decoded: &mut Vec<u8>) -> bool {
    let Some(raw) = buf.get(span.start as usize..span.end as usize) else {
        return false;
    };
    if !raw.contains(&b'\\') {
        return false;
    }
    let start = decoded.len();
    unescape_into(raw, decoded);
    span.start = u32::try_from(start).unwrap_or(u32::MAX);
    span.end = u32::try_from(decoded.len()).unwrap_or(u32::MAX);
    true
}

fn parse_line(
    buf: &[u8],
    start: usize,
    end: usize,
    decoded: &mut Vec<u8>,
) -> std::result::Result<(Entry, u8), &'static str> {
    let mut pos = start;
    let f = |pos: &mut usize, what| next_field(buf, pos, end).ok_or(what);
    let bytes = |s: Span| buf.get(s.start as usize..s.end as usize).unwrap_or(&[]);
    let mount_id = parse_num(bytes(f(&mut pos, "missing mount id")?)).ok_or("bad mount id")?;
    let parent_id = parse_num(bytes(f(&mut pos, "missing parent id")?)).ok_or("bad parent id")?;
    let dev = bytes(f(&mut pos, "missing major:minor")?);
    let colon = dev
        .iter()
        .position(|&b| b == b':')
        .ok_or("bad major:minor")?;
    let major = parse_num(dev.get(..colon).unwrap_or(&[])).ok_or("bad major")?;
    let minor = parse_num(dev.get(colon + 1..).unwrap_or(&[])).ok_or("bad minor")?;
    let mut root = f(&mut pos, "missing root")?;
    let mut mount_point = f(&mut pos, "missing mount point")?;
    let options = f(&mut pos, "missing mount options")?;
    // Optional fields up to the lone "-".
    let opt_start = pos;
    let mut opt_end = pos;
    let (mut shared, mut master, mut propagate_from, mut unbindable) = (None, None, None, false);
    loop {
        let field = f(&mut pos, "missing '-' separator")?;
        let fb = bytes(field);
        if fb == b"-" {
            break;
        }
        opt_end = field.end as usize;
        match OptionalField::parse(std::str::from_utf8(fb).unwrap_or("")) {
            OptionalField::Shared(n) => shared = Some(n),
            OptionalField::Master(n) => master = Some(n),
            OptionalField::PropagateFrom(n) => propagate_from = Some(n),
            OptionalField::Unbindable => unbindable = true,
            OptionalField::Other(_) => {}
        }
    }
    let optional = Span {
        start: u32::try_from(opt_start).map_err(|_| "line too long")?,
        end: u32::try_from(opt_end.max(opt_start)).map_err(|_| "line too long")?,
    };
    let fs_type = f(&mut pos, "missing filesystem type")?;
    let mut source = f(&mut pos, "missing mount source")?;
    // The super options are the rest of the line (they never contain a raw space).
    let mut super_options = Span {
        start: u32::try_from(pos.min(end)).map_err(|_| "line too long")?,
        end: u32::try_from(end).map_err(|_| "line too long")?,
    };
    if pos > end {
        return Err("missing super options");
    }
    if bytes(mount_point).first() != Some(&b'/') {
        return Err("mount point is not absolute");
    }
    let mut flags = 0u8;
    if decode_field(buf, &mut root, decoded) {
        flags |= F_ROOT;
    }
    if decode_field(buf, &mut mount_point, decoded) {
        flags |= F_MOUNT_POINT;
    }
    if decode_field(buf, &mut source, decoded) {
        flags |= F_SOURCE;
    }
    if decode_field(buf, &mut super_options, decoded) {
        flags |= F_SUPER;
    }
    Ok((
        Entry {
            mount_id,
            parent_id,
            major,
            minor,
            root,
            mount_point,
            options,
            optional,
            fs_type,
            source,
            super_options,
            shared,
            master,
            propagate_from,
            unbindable,
        },
        flags,
    ))
}

/// Decodes every `\ooo` octal escape (three octal digits, value ≤ 0o377); any other backslash
/// is kept as is.
pub fn unescape_into(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'\\'
            && let Some(&[d0, d1, d2]) = raw.get(i + 1..i + 4)
            && (b'0'..=b'3').contains(&d0)
            && (b'0'..=b'7').contains(&d1)
            && (b'0'..=b'7').contains(&d2)
        {
            out.push(((d0 - b'0') << 6) | ((d1 - b'0') << 3) | (d2 - b'0'));
            i += 4;
            continue;
        }
        out.push(b);
        i += 1;
    }
}

/// Decodes `\ooo` escapes (see [`unescape_into`]).
#[must_use]
pub fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    unescape_into(raw, &mut out);
    out
}

/// Escapes a path the way the kernel writes it into mountinfo: space, tab, newline and
/// backslash become `\040`, `\011`, `\012`, `\134`.
#[must_use]
pub fn escape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for &b in raw {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => {
                out.push(b'\\');
                out.push(b'0' + (b >> 6));
                out.push(b'0' + ((b >> 3) & 7));
                out.push(b'0' + (b & 7));
            }
            _ => out.push(b),
        }
    }
    out
}

/// Lexically normalizes an absolute query path; `None` when it is not absolute.
fn normalize_query(path: &Path) -> Option<Vec<u8>> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.first() != Some(&b'/') {
        return None;
    }
    // Fast path: already normal (no "//", no "." or ".." component, no trailing '/').
    let normal = !bytes.windows(2).any(|w| w == b"//")
        && !bytes.split(|&b| b == b'/').any(|c| c == b"." || c == b"..")
        && (bytes.len() == 1 || bytes.last() != Some(&b'/'));
    if normal {
        return Some(bytes.to_vec());
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in bytes.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(bytes.len());
    for p in &parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Some(out)
}

/// The sort key maps `/` below every other byte so a subtree is contiguous, and treats the
/// root `/` as the empty key (so `/a` = root + `/` + `a`).
#[inline]
fn key_bytes(p: &[u8]) -> &[u8] {
    if p == b"/" { &[] } else { p }
}

/// `/` sorts first, every other byte keeps its order above it. A `u16`, so no byte shares
/// `/`'s rank: a NUL (an octal `\000` in mountinfo) mapped to 0 as well made the order not
/// total, and the index's sort panicked (found by the `mountinfo` fuzz target).
#[inline]
fn map_byte(b: u8) -> u16 {
    if b == b'/' { 0 } else { u16::from(b) + 1 }
}

#[inline]
fn key_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let (a, b) = (key_bytes(a), key_bytes(b));
    for (x, y) in a.iter().zip(b.iter()) {
        if x != y {
            return map_byte(*x).cmp(&map_byte(*y));
        }
    }
    a.len().cmp(&b.len())
}

/// Whether `a` sorts before the end of `q`'s subtree (`q` followed by a byte just above `/`).
#[inline]
fn key_cmp_upper(a: &[u8], q: &[u8]) -> bool {
    let (a, q) = (key_bytes(a), key_bytes(q));
    for (x, y) in a.iter().zip(q.iter()) {
        if x != y {
            return map_byte(*x) < map_byte(*y);
        }
    }
    if a.len() < q.len() {
        return true;
    }
    // `a` starts with `q`: inside the subtree when equal or followed by '/'.
    match a.get(q.len()) {
        None => true,
        Some(&next) => map_byte(next) < 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
36 22 98:0 /mnt1 /mnt/parent\\040dir rw,noatime master:1 - ext3 /dev/root rw,errors=continue
37 36 0:30 / /mnt/parent\\040dir/sub ro,nosuid,nodev shared:7 master:2 propagate_from:3 - tmpfs tmp\\011fs rw,size=10k
38 22 0:31 / /mnt/a\\134b\\012c rw unbindable - tmpfs none rw
39 22 0:32 / /mnt/parent rw - tmpfs none rw
40 39 0:33 / /mnt/parent rw - tmpfs none rw
41 22 0:34 / /mnt/parent-x rw - tmpfs none rw
";

    #[test]
    fn parses_all_fields_and_decodes() {
        let t = MountTable::parse(SAMPLE).unwrap();
        assert_eq!(t.len(), 7);
        let e = t.iter().nth(1).unwrap();
        assert_eq!(e.mount_id(), 36);
        assert_eq!(e.parent_id(), 22);
        assert_eq!((e.major(), e.minor()), (98, 0));
        assert_eq!(e.root(), Path::new("/mnt1"));
        assert_eq!(e.mount_point(), Path::new("/mnt/parent dir"));
        assert_eq!(e.mount_options(), "rw,noatime");
        assert_eq!(e.master(), Some(1));
        assert_eq!(e.shared(), None);
        assert_eq!(e.fs_type(), "ext3");
        assert_eq!(e.mount_source(), "/dev/root");
        assert_eq!(e.super_options(), "rw,errors=continue");
        let e = t.iter().nth(2).unwrap();
        assert_eq!(
            e.optional_fields().collect::<Vec<_>>(),
            vec![
                OptionalField::Shared(7),
                OptionalField::Master(2),
                OptionalField::PropagateFrom(3)
            ]
        );
        assert!(e.is_read_only() && e.has_mount_option("nosuid") && !e.has_mount_option("no"));
        assert_eq!(e.mount_source(), "tmp\tfs");
        let e = t.iter().nth(3).unwrap();
        assert_eq!(e.mount_point(), Path::new("/mnt/a\\b\nc"));
        assert!(e.is_unbindable());
        assert_eq!(e.propagation(), crate::Propagation::Unbindable);
    }

    #[test]
    fn queries() {
        let t = MountTable::parse(SAMPLE).unwrap();
        assert!(t.is_mount_point(Path::new("/")));
        assert!(t.is_mount_point(Path::new("/mnt/parent dir")));
        assert!(t.is_mount_point(Path::new("/mnt/parent dir/")));
        assert!(t.is_mount_point(Path::new("/mnt//parent dir/./sub")));
        assert!(t.is_mount_point(Path::new("/mnt/x/../parent")));
        assert!(!t.is_mount_point(Path::new("/mnt")));
        assert!(!t.is_mount_point(Path::new("relative")));
        let below: Vec<_> = t
            .mounts_at_or_below(Path::new("/mnt/parent"))
            .map(|e| e.mount_id())
            .collect();
        assert_eq!(
            below,
            vec![39, 40],
            "siblings /mnt/parent dir and -x are not below"
        );
        let below: Vec<_> = t
            .mounts_at_or_below(Path::new("/mnt/parent dir"))
            .map(|e| e.mount_id())
            .collect();
        assert_eq!(below, vec![36, 37]);
        assert_eq!(t.mounts_at_or_below(Path::new("/")).len(), 7);
        assert_eq!(t.mounts_at_or_below(Path::new("/mnt")).len(), 6);
        assert_eq!(
            t.top_mount_at(Path::new("/mnt/parent")).unwrap().mount_id(),
            40
        );
        let order: Vec<_> = t
            .unmount_order(Path::new("/mnt"))
            .iter()
            .map(|e| e.mount_id())
            .collect();
        assert_eq!(order.first(), Some(&37));
        let pos = |id| order.iter().position(|&x| x == id).unwrap();
        assert!(pos(40) < pos(39), "top of a stack first: {order:?}");
        assert_eq!(
            t.by_mount_id(38).unwrap().mount_point(),
            Path::new("/mnt/a\\b\nc")
        );
        assert!(t.by_mount_id(99).is_none());
    }

    #[test]
    fn bad_lines_are_typed_errors() {
        for (text, line) in [
            ("x 1 0:1 / / rw - tmpfs none rw\n", 1),
            (
                "1 1 0:1 / / rw - tmpfs none rw\n2 1 01 / /a rw - t n rw\n",
                2,
            ),
            ("1 1 0:1 / / rw shared:1 tmpfs\n", 1),
            ("1 1 0:1 / rel rw - tmpfs none rw\n", 1),
            ("1 1 0:1 /\n", 1),
        ] {
            match MountTable::parse(text) {
                Err(MountError::MountInfoParse { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(MountTable::parse("").unwrap().is_empty());
    }

    #[test]
    fn unescape_leaves_non_octal_backslashes() {
        assert_eq!(unescape(br"a\040b\9\12x\"), b"a b\\9\\12x\\".to_vec());
        assert_eq!(unescape(br"\400"), b"\\400".to_vec());
    }

    fn component() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b' '),
                Just(b'\t'),
                Just(b'\n'),
                Just(b'\\'),
                Just(b'0'),
                Just(b'4'),
                any::<u8>().prop_filter("no NUL or /", |b| *b != 0 && *b != b'/'),
            ],
            1..12,
        )
        // The kernel prints canonical paths: never a `.` or `..` component.
        .prop_filter("not . or ..", |c| {
            c.as_slice() != b"." && c.as_slice() != b".."
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any path escaped the kernel's way parses back to itself, and queries find it.
        #[test]
        fn escaped_paths_round_trip(
            comps in proptest::collection::vec(component(), 1..5),
            src in component(),
        ) {
            let mut path = Vec::new();
            for c in &comps {
                path.push(b'/');
                path.extend_from_slice(c);
            }
            let mut text = b"22 1 0:21 / / rw shared:1 - ext4 /dev/vda rw\n".to_vec();
            text.extend_from_slice(b"50 22 0:40 ");
            text.extend_from_slice(&escape(&path));
            text.push(b' ');
            text.extend_from_slice(&escape(&path));
            text.extend_from_slice(b" rw master:3 - tmpfs ");
            text.extend_from_slice(&escape(&src));
            text.extend_from_slice(b" rw\n");
            let t = MountTable::parse(text).unwrap();
            let e = t.iter().nth(1).unwrap();
            prop_assert_eq!(e.mount_point().as_os_str().as_bytes(), &path[..]);
            prop_assert_eq!(e.root().as_os_str().as_bytes(), &path[..]);
            prop_assert_eq!(e.mount_source().as_bytes(), &src[..]);
            prop_assert_eq!(e.master(), Some(3));
            let p = Path::new(OsStr::from_bytes(&path));
            prop_assert!(t.is_mount_point(p));
            prop_assert_eq!(t.mounts_at_or_below(p).len(), 1);
            prop_assert_eq!(unescape(&escape(&path)), path);
        }

        /// The index answers like a linear scan over the component-wise prefix relation.
        #[test]
        fn index_matches_linear_scan(
            paths in proptest::collection::vec(proptest::collection::vec(prop_oneof![Just(b"a".to_vec()), Just(b"a b".to_vec()), Just(b"a-".to_vec()), Just(b"b".to_vec())], 0..4), 1..30),
            query in proptest::collection::vec(prop_oneof![Just(b"a".to_vec()), Just(b"a b".to_vec()), Just(b"b".to_vec())], 0..3),
        ) {
            let join = |cs: &Vec<Vec<u8>>| {
                let mut p = Vec::new();
                for c in cs { p.push(b'/'); p.extend_from_slice(c); }
                if p.is_empty() { p.push(b'/'); }
                p
            };
            let mut text = Vec::new();
            for (i, cs) in paths.iter().enumerate() {
                text.extend_from_slice(format!("{} 1 0:1 / ", i + 2).as_bytes());
                text.extend_from_slice(&escape(&join(cs)));
                text.extend_from_slice(b" rw - tmpfs none rw\n");
            }
            let t = MountTable::parse(text).unwrap();
            let q = join(&query);
            let qp = Path::new(OsStr::from_bytes(&q));
            let mut want: Vec<u64> = paths.iter().enumerate()
                .filter(|(_, cs)| cs.starts_with(&query))
                .map(|(i, _)| i as u64 + 2).collect();
            let mut got: Vec<u64> = t.mounts_at_or_below(qp).map(|e| e.mount_id()).collect();
            want.sort_unstable();
            got.sort_unstable();
            prop_assert_eq!(got, want);
            let at = paths.contains(&query);
            prop_assert_eq!(t.is_mount_point(qp), at);
        }
    }
}
