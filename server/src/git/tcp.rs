//! libgit2's plain TCP connections (the in-process `git://` fetch of a mirror) with
//! `TCP_NODELAY` and, before every read, `TCP_QUICKACK`.
//!
//! Why: a `git://` fetch into a mirror with more than 20 commits negotiates in rounds (libgit2
//! sends its first 20 "have" lines and waits for the server's answer before "done"). The
//! server (`git upload-pack` behind `git daemon`) writes that answer as several small packets
//! ("ACK … common", then "NAK"); Nagle's algorithm holds each packet after the first until the
//! previous one is acknowledged, and by then libgit2's side of the connection, which has been
//! both sending and receiving, is in Linux's delayed-ACK mode: it acknowledges after 40 ms.
//! Every webhook on such a repository waited those 40 ms (issue 12: webhook → running p50
//! 57 ms with 300 commits, 15 ms with 30). Asking for an immediate acknowledgement before each
//! read (`TCP_QUICKACK`, which Linux clears again by itself) lets the server's packets follow
//! each other at once; `TCP_NODELAY` does the same for what libgit2 writes in pieces.
//!
//! libgit2 has no option for either, so [`register`] replaces its standard (non-TLS) socket
//! stream with this one, for the whole process, through `git_stream_register` — the hook it
//! offers for custom transports. The stream is otherwise what libgit2's own does: connect to
//! each address of the host in turn, honour libgit2's timeouts, blocking reads and writes.
//! This is the only `unsafe` code of the server: the C structure below mirrors
//! `git2/sys/stream.h` (libgit2 1.9) field for field.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

/// `GIT_STREAM_VERSION`.
const STREAM_VERSION: c_int = 1;
/// `GIT_STREAM_STANDARD`.
const STREAM_STANDARD: c_int = 1;
/// `GIT_ERROR_NET`.
const ERROR_NET: c_int = 12;

/// `git_stream` (git2/sys/stream.h).
#[repr(C)]
struct RawStream {
    version: c_int,
    /// The bit fields `encrypted : 1, proxy_support : 1`: both 0 here.
    flags: u32,
    timeout: c_int,
    connect_timeout: c_int,
    connect: extern "C" fn(*mut RawStream) -> c_int,
    certificate: Option<extern "C" fn(*mut *mut c_void, *mut RawStream) -> c_int>,
    set_proxy: Option<extern "C" fn(*mut RawStream, *const c_void) -> c_int>,
    read: extern "C" fn(*mut RawStream, *mut c_void, usize) -> isize,
    write: extern "C" fn(*mut RawStream, *const c_char, usize, c_int) -> isize,
    close: extern "C" fn(*mut RawStream) -> c_int,
    free: extern "C" fn(*mut RawStream),
}

/// `git_stream_registration`.
#[repr(C)]
struct Registration {
    version: c_int,
    init: Option<extern "C" fn(*mut *mut RawStream, *const c_char, *const c_char) -> c_int>,
    wrap: Option<extern "C" fn(*mut *mut RawStream, *mut RawStream, *const c_char) -> c_int>,
}

unsafe extern "C" {
    fn git_stream_register(kind: c_int, registration: *mut Registration) -> c_int;
}

/// A connection: libgit2 sees `raw` (the first field), this module the rest.
#[repr(C)]
struct Stream {
    raw: RawStream,
    host: String,
    port: String,
    socket: Option<TcpStream>,
}

/// Makes libgit2 open its plain TCP connections with [`Stream`]. Once per process; should
/// libgit2 refuse, its own sockets stay (slower, as before) and a warning says so once.
pub fn register() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // The stream registry is set up by libgit2's global initialisation.
        libgit2_sys::init();
        let mut registration = Registration { version: STREAM_VERSION, init: Some(init), wrap: None };
        // SAFETY: `registration` matches `git_stream_registration`; libgit2 copies it.
        let code = unsafe { git_stream_register(STREAM_STANDARD, &mut registration) };
        if code != 0 {
            tracing::warn!(code, "git_stream_register failed: in-process git fetches negotiate without quick acknowledgements");
        }
    });
}

/// Records `message` as libgit2's last error; returns -1.
fn fail(message: &str) -> c_int {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: a valid C string; libgit2 copies it.
    unsafe { libgit2_sys::git_error_set_str(ERROR_NET, text.as_ptr()) };
    -1
}

/// The [`Stream`] behind a `git_stream` pointer libgit2 hands back.
///
/// SAFETY: `raw` must come from [`init`] and not be freed yet; libgit2 uses a stream from one
/// thread at a time.
unsafe fn stream<'a>(raw: *mut RawStream) -> &'a mut Stream {
    unsafe { &mut *raw.cast::<Stream>() }
}

extern "C" fn init(out: *mut *mut RawStream, host: *const c_char, port: *const c_char) -> c_int {
    if out.is_null() || host.is_null() || port.is_null() {
        return fail("no host or port for the connection");
    }
    // SAFETY: libgit2 passes NUL-terminated strings.
    let (host, port) = unsafe { (CStr::from_ptr(host), CStr::from_ptr(port)) };
    let stream = Box::new(Stream {
        raw: RawStream {
            version: STREAM_VERSION,
            flags: 0,
            timeout: 0,
            connect_timeout: 0,
            connect,
            certificate: None,
            set_proxy: None,
            read,
            write,
            close,
            free,
        },
        host: host.to_string_lossy().into_owned(),
        port: port.to_string_lossy().into_owned(),
        socket: None,
    });
    // SAFETY: `out` is libgit2's out-parameter; `Stream` starts with the `git_stream` it reads.
    unsafe { *out = Box::into_raw(stream).cast::<RawStream>() };
    0
}

fn millis(ms: c_int) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms as u64))
}

extern "C" fn connect(raw: *mut RawStream) -> c_int {
    // SAFETY: see `stream`.
    let s = unsafe { stream(raw) };
    let port: u16 = match s.port.parse() {
        Ok(p) => p,
        Err(_) => return fail(&format!("invalid port `{}`", s.port)),
    };
    // `[::1]` in a URL reaches here with its brackets.
    let host = s.host.trim_start_matches('[').trim_end_matches(']');
    let addrs = match (host, port).to_socket_addrs() {
        Ok(a) => a,
        Err(e) => return fail(&format!("failed to resolve address for {host}: {e}")),
    };
    let mut last = None;
    for addr in addrs {
        let attempt = match millis(s.raw.connect_timeout) {
            Some(limit) => TcpStream::connect_timeout(&addr, limit),
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(socket) => {
                // Best effort: without them the connection is only slower.
                let _ = socket.set_nodelay(true);
                let _ = socket.set_read_timeout(millis(s.raw.timeout));
                let _ = socket.set_write_timeout(millis(s.raw.timeout));
                s.socket = Some(socket);
                return 0;
            }
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => fail(&format!("failed to connect to {host}: {e}")),
        None => fail(&format!("no address for {host}")),
    }
}

extern "C" fn read(raw: *mut RawStream, data: *mut c_void, len: usize) -> isize {
    // SAFETY: see `stream`.
    let s = unsafe { stream(raw) };
    let Some(socket) = s.socket.as_mut() else { return fail("read from a closed connection") as isize };
    quickack(socket);
    // SAFETY: libgit2 passes a buffer of `len` writable bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(data.cast::<u8>(), len) };
    loop {
        match socket.read(buf) {
            Ok(n) => return n as isize,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return fail(&format!("could not read from socket: {e}")) as isize,
        }
    }
}

/// Asks Linux to acknowledge what arrives next at once. Linux turns this off again by itself
/// (it is not a lasting option): set before every read. Best effort.
fn quickack(socket: &TcpStream) {
    use std::os::fd::AsRawFd as _;
    let on: c_int = 1;
    // SAFETY: a valid socket and a `c_int` option value of the size given.
    let _ = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const c_int).cast::<c_void>(),
            std::mem::size_of::<c_int>() as libc::socklen_t,
        )
    };
}

extern "C" fn write(raw: *mut RawStream, data: *const c_char, len: usize, _flags: c_int) -> isize {
    // SAFETY: see `stream`.
    let s = unsafe { stream(raw) };
    let Some(socket) = s.socket.as_mut() else { return fail("write to a closed connection") as isize };
    // SAFETY: libgit2 passes `len` readable bytes.
    let buf = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
    loop {
        match socket.write(buf) {
            Ok(n) => return n as isize,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return fail(&format!("could not write to socket: {e}")) as isize,
        }
    }
}

extern "C" fn close(raw: *mut RawStream) -> c_int {
    // SAFETY: see `stream`.
    let s = unsafe { stream(raw) };
    if let Some(socket) = s.socket.take() {
        let _ = socket.shutdown(Shutdown::Both);
    }
    0
}

extern "C" fn free(raw: *mut RawStream) {
    if !raw.is_null() {
        // SAFETY: `raw` came from `Box::into_raw` in `init`; libgit2 frees a stream once.
        drop(unsafe { Box::from_raw(raw.cast::<Stream>()) });
    }
}
