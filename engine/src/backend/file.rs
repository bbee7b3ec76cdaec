//! A volume on a regular file or a block device, opened O_DIRECT.
//!
//! The logical block size comes from the kernel (statx DIOALIGN for files,
//! BLKSSZGET for devices), so the engine never issues an I/O the device
//! would have to read-modify-write or the page cache would have to bounce.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use io_uring::{opcode, types};

use super::{BlockBackend, FileRef, Geometry, IoOp, Prepared, Request};

#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Capacity in bytes. Needed to create a file; a file shorter than this is
    /// extended, a block device must be at least this large.
    pub size: Option<u64>,
    /// Logical block size to expose; must be a multiple of what the device
    /// needs. Defaults to the device's own.
    pub block_size: Option<u32>,
}

pub struct FileBackend {
    file: File,
    path: PathBuf,
    geometry: Geometry,
    is_block_device: bool,
}

// Linux <linux/fs.h> ioctls for block devices.
nix::ioctl_read!(blk_get_size64, 0x12, 114, u64);
nix::ioctl_read_bad!(blk_get_logical_block_size, 0x1268, libc::c_int);

impl FileBackend {
    pub fn open(path: &Path, options: &OpenOptions) -> io::Result<FileBackend> {
        let ctx = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
        };
        let exists = path.exists();
        if !exists && options.size.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} does not exist (give a size to create it)",
                    path.display()
                ),
            ));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(!exists)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EINVAL) {
                    io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!("{}: this filesystem refuses O_DIRECT (tmpfs?); use a file on ext4/xfs or a block device", path.display()),
                    )
                } else {
                    ctx("cannot open", e)
                }
            })?;
        let meta = file.metadata().map_err(|e| ctx("cannot stat", e))?;
        let is_block_device = meta.file_type().is_block_device();

        let (native_block, native_size) = if is_block_device {
            let mut size = 0u64;
            let mut lbs: libc::c_int = 0;
            // SAFETY: both ioctls write one integer into the pointer we pass,
            // which points at a live local of the right type.
            unsafe {
                blk_get_size64(file.as_raw_fd(), &mut size)
                    .map_err(|e| ctx("BLKGETSIZE64", e.into()))?;
                blk_get_logical_block_size(file.as_raw_fd(), &mut lbs)
                    .map_err(|e| ctx("BLKSSZGET", e.into()))?;
            }
            (lbs.max(512) as u32, size)
        } else {
            (dio_alignment(&file).unwrap_or(512), meta.len())
        };

        let block_size = options.block_size.unwrap_or(native_block.max(512));
        if !block_size.is_power_of_two() || block_size < native_block || block_size > 65536 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: block size {block_size} must be a power of two, at least the device's {native_block} and at most 65536",
                    path.display()
                ),
            ));
        }

        let capacity = match options.size {
            Some(size) if is_block_device && size > native_size => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: device has {native_size} bytes, {size} asked",
                        path.display()
                    ),
                ))
            }
            Some(size) => {
                if !is_block_device && size > native_size {
                    file.set_len(size).map_err(|e| ctx("cannot size", e))?;
                }
                size
            }
            None => native_size,
        };
        let capacity = capacity - capacity % block_size as u64;
        if capacity == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: volume would hold no block of {block_size} bytes",
                    path.display()
                ),
            ));
        }
        Ok(FileBackend {
            file,
            path: path.to_owned(),
            geometry: Geometry {
                block_size,
                capacity,
            },
            is_block_device,
        })
    }
}

/// The offset alignment O_DIRECT needs on this file (Linux >= 6.1 statx).
fn dio_alignment(file: &File) -> Option<u32> {
    // SAFETY: statx only writes into the zeroed struct we pass; the path is an
    // empty C string with AT_EMPTY_PATH, so it names the descriptor itself.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 || stx.stx_dio_offset_align == 0 {
        return None;
    }
    Some(stx.stx_dio_offset_align)
}

macro_rules! with_fd {
    ($file:expr, |$fd:ident| $build:expr) => {
        match $file {
            FileRef::Fixed(slot) => {
                let $fd = types::Fixed(slot);
                $build
            }
            FileRef::Raw(raw) => {
                let $fd = types::Fd(raw);
                $build
            }
        }
    };
}

impl BlockBackend for FileBackend {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }

    fn describe(&self) -> String {
        let kind = if self.is_block_device {
            "block device"
        } else {
            "file"
        };
        format!(
            "{kind} {} (O_DIRECT, {}-byte blocks)",
            self.path.display(),
            self.geometry.block_size
        )
    }

    fn prepare(&self, req: Request<'_>) -> Prepared {
        let file = req.file.unwrap_or(FileRef::Raw(self.file.as_raw_fd()));
        let ptr = req.data.as_mut_ptr();
        let len = req.data.len() as u32;
        let entry = match req.op {
            IoOp::Read { offset } => match req.buf_index {
                Some(index) => with_fd!(file, |fd| opcode::ReadFixed::new(fd, ptr, len, index)
                    .offset(offset)
                    .build()),
                None => with_fd!(file, |fd| opcode::Read::new(fd, ptr, len)
                    .offset(offset)
                    .build()),
            },
            IoOp::Write { offset, fua } => {
                // RWF_DSYNC on an O_DIRECT write becomes a FUA write on devices
                // that have it, and write + flush on those that do not.
                let flags = if fua { libc::RWF_DSYNC } else { 0 };
                match req.buf_index {
                    Some(index) => {
                        with_fd!(file, |fd| opcode::WriteFixed::new(fd, ptr, len, index)
                            .offset(offset)
                            .rw_flags(flags)
                            .build())
                    }
                    None => with_fd!(file, |fd| opcode::Write::new(fd, ptr, len)
                        .offset(offset)
                        .rw_flags(flags)
                        .build()),
                }
            }
            IoOp::Flush => with_fd!(file, |fd| opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build()),
            IoOp::WriteZeroes { offset, len } => {
                with_fd!(file, |fd| opcode::Fallocate::new(fd, len)
                    .offset(offset)
                    .mode(libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE)
                    .build())
            }
            IoOp::Discard { offset, len } => with_fd!(file, |fd| opcode::Fallocate::new(fd, len)
                .offset(offset)
                .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                .build()),
        };
        Prepared::Sqe(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creating_needs_a_size_and_gets_it() {
        let dir = tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/../build")).unwrap();
        let path = dir.path().join("vol");
        let err = FileBackend::open(&path, &OpenOptions::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("give a size"));
        let b = FileBackend::open(
            &path,
            &OpenOptions {
                size: Some(8 << 20),
                block_size: None,
            },
        )
        .unwrap();
        assert_eq!(b.geometry().capacity, 8 << 20);
        assert!(b.geometry().block_size >= 512);
        assert!(b.describe().contains("O_DIRECT"));
    }

    #[test]
    fn block_size_below_the_device_or_not_a_power_of_two_is_refused() {
        let dir = tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/../build")).unwrap();
        let path = dir.path().join("vol");
        let opts = |bs| OpenOptions {
            size: Some(1 << 20),
            block_size: Some(bs),
        };
        assert!(FileBackend::open(&path, &opts(3000)).is_err());
        assert!(FileBackend::open(&path, &opts(4096)).is_ok());
    }
}
