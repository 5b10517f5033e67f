//! The device's handle on its host side: the hub, and (for the Unix-socket
//! backend) what keeps the host thread running. The thread holds only the hub,
//! so when the last handle goes (the device and its restore arguments, with
//! the machine) the thread is stopped and joined, and it removes the socket.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use net::RxWaker;

use super::hub::Hub;
use super::sys::EventFd;
use super::thread::HostThread;
use super::VsockError;

/// The host side of a vsock device. Cloned handles share it.
#[derive(Clone)]
pub struct VsockHost {
    hub: Hub,
    owner: Option<Arc<Owner>>,
}

impl VsockHost {
    /// Listens on the Unix socket `path` (replacing a stale socket there, but
    /// never another kind of file nor a socket someone listens on) and starts
    /// the host thread, which calls `waker` when the device has work. Guest
    /// connections to host port P go to the socket `PATH_P`.
    pub fn listen(path: &Path, waker: RxWaker) -> Result<Self, VsockError> {
        let io_err = |what: String| move |source| VsockError::Io { what, source };
        let shown = path.display();
        let listener = bind(path)?;
        listener
            .set_nonblocking(true)
            .map_err(io_err(format!("vsock: {shown}")))?;
        let meta = fs::metadata(path).map_err(io_err(format!("vsock: {shown}")))?;
        let kick = Arc::new(EventFd::new().map_err(io_err("vsock: eventfd".into()))?);
        let hub = Hub::new(Some(kick), waker);
        let t = HostThread::new(
            hub.clone(),
            listener,
            path.to_path_buf(),
            (meta.dev(), meta.ino()),
        );
        let thread = std::thread::Builder::new()
            .name("virtio-vsock".into())
            .spawn(move || {
                sandbox::enter(sandbox::ThreadKind::Io);
                t.run()
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                let _ = fs::remove_file(path);
                return Err(io_err("vsock: spawning its thread".into())(e));
            }
        };
        Ok(VsockHost {
            hub: hub.clone(),
            owner: Some(Arc::new(Owner {
                hub,
                thread: Some(thread),
                path: path.to_path_buf(),
            })),
        })
    }

    /// A host side with no thread: the test plays the host through the hub.
    #[cfg(test)]
    pub(crate) fn detached(waker: RxWaker) -> Self {
        VsockHost {
            hub: Hub::new(None, waker),
            owner: None,
        }
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    /// A one-line description for logs.
    pub fn describe(&self) -> String {
        match &self.owner {
            Some(o) => format!("vsock (listening on {})", o.path.display()),
            None => "vsock (no host side)".into(),
        }
    }
}

/// Stops and joins the host thread when the last handle goes.
struct Owner {
    hub: Hub,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.hub.lock().stop = true;
        if let Some(k) = self.hub.kick() {
            k.signal();
        }
        if let Some(t) = self.thread.take() {
            // The last handle can go on the thread itself (a wake that ran
            // the machine's last reference down): it ends on its own then.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// Binds `path`, replacing only a stale socket.
fn bind(path: &Path) -> Result<UnixListener, VsockError> {
    let shown = path.display();
    let io_err = |what: String| move |source| VsockError::Io { what, source };
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(VsockError::InUse(path.to_path_buf()));
            }
            fs::remove_file(path)
                .map_err(io_err(format!("vsock: removing the stale socket {shown}")))?;
        }
        Ok(_) => return Err(VsockError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("vsock: {shown}"))(e)),
    }
    UnixListener::bind(path).map_err(io_err(format!("vsock: cannot listen on {shown}")))
}
