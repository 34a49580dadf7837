//! driftless.zig: helpers for writing a Driftless plugin in Zig (plugin ABI 1, see
//! docs/developer/plugins.md). Needs only Zig's std.
//!
//! Add it as a module and reference it from the plugin's root file, which brings in the
//! `driftless_alloc` export:
//!
//!     const driftless = @import("driftless");
//!     comptime {
//!         _ = driftless;
//!     }
//!
//!     export fn driftless_facts(ptr: [*]u8, len: usize) i64 {
//!         driftless.freeInput(ptr, len);
//!         return driftless.returnStatic("{\"facts\":{\"hello\":\"world\"},\"metrics\":[]}");
//!     }
//!
//! Entry points take `(ptr: [*]u8, len: usize) i64`: on wasm32 that is the ABI's (i32, i32) -> i64.
//! The input belongs to the entry point: parseInput parses and frees it, freeInput just frees it.
//!
//! Build as a WASI reactor (no `_start`):
//!     zig build-exe -target wasm32-wasi -fno-entry -rdynamic -O ReleaseSmall \
//!         --dep driftless -Mroot=plugin.zig -Mdriftless=driftless.zig
const std = @import("std");
const wasi = std.os.wasi;

/// The allocator behind driftless_alloc, the outputs and the helpers below.
pub const gpa = std.heap.wasm_allocator;

// ---- Inputs ---------------------------------------------------------------------------------

/// Where a zero-length input goes: nothing to allocate, nothing to free.
var empty_input: u8 = 0;

/// The host asks for `size` bytes to write a call's input into; 0 means out of memory.
export fn driftless_alloc(size: usize) usize {
    if (size == 0) return @intFromPtr(&empty_input);
    const bytes = gpa.alloc(u8, size) catch return 0;
    return @intFromPtr(bytes.ptr);
}

/// Frees an entry point's input (allocated by driftless_alloc).
pub fn freeInput(ptr: [*]u8, len: usize) void {
    if (len > 0) gpa.free(ptr[0..len]);
}

/// Parses an entry point's JSON input into `T` (members `T` does not name are ignored) and frees
/// the input. The result owns its strings; `deinit()` it when done.
pub fn parseInput(comptime T: type, ptr: [*]u8, len: usize) !std.json.Parsed(T) {
    defer freeInput(ptr, len);
    return std.json.parseFromSlice(T, gpa, ptr[0..len], .{
        .ignore_unknown_fields = true,
        .allocate = .alloc_always,
    });
}

// ---- Outputs --------------------------------------------------------------------------------

/// The last output handed to the host: it must stay valid until the next call, so it is freed
/// when the next output replaces it.
var output: []u8 = &.{};

/// Packs an output the way entry points return it: (ptr << 32) | len.
pub fn pack(bytes: []const u8) i64 {
    const ptr: u64 = @intFromPtr(bytes.ptr);
    return @bitCast((ptr << 32) | @as(u32, @intCast(bytes.len)));
}

fn replaceOutput(bytes: []u8) void {
    if (output.len > 0) gpa.free(output);
    output = bytes;
}

/// Returns a constant JSON document, e.g. returnStatic("{}").
pub fn returnStatic(comptime json: []const u8) i64 {
    replaceOutput(&.{});
    return pack(json);
}

/// Returns `bytes` (allocated with `gpa`, taken over) as the output.
pub fn returnOwned(bytes: []u8) i64 {
    replaceOutput(bytes);
    return pack(bytes);
}

/// Returns `value` serialized by std.json.Stringify, e.g. returnJson(.{ .value = text }).
pub fn returnJson(value: anytype) i64 {
    const bytes = std.json.Stringify.valueAlloc(gpa, value, .{}) catch return outOfMemory();
    return returnOwned(bytes);
}

/// Returns {"error": "<formatted message>"}: the host fails the call with that message.
pub fn fail(comptime fmt: []const u8, args: anytype) i64 {
    const message = std.fmt.allocPrint(gpa, fmt, args) catch return outOfMemory();
    defer gpa.free(message);
    return returnJson(.{ .@"error" = message });
}

fn outOfMemory() i64 {
    return returnStatic("{\"error\":\"out of memory\"}");
}

/// An output written piece by piece with std.json.Stringify:
///
///     var out: driftless.Output = .init();
///     var json = out.json();
///     try json.beginObject(); ... try json.endObject();
///     return out.finish();
///
/// Keep `out` in place (do not copy it) once `json()` was called.
pub const Output = struct {
    buffer: std.Io.Writer.Allocating,

    pub fn init() Output {
        return .{ .buffer = .init(gpa) };
    }

    pub fn json(self: *Output) std.json.Stringify {
        return .{ .writer = &self.buffer.writer };
    }

    /// Returns what was written as the output.
    pub fn finish(self: *Output) i64 {
        const bytes = self.buffer.toOwnedSlice() catch return outOfMemory();
        return returnOwned(bytes);
    }

    /// Drops what was written (on an error path).
    pub fn deinit(self: *Output) void {
        self.buffer.deinit();
    }
};

// ---- Files ----------------------------------------------------------------------------------
// The host grants directories as WASI preopens named by their absolute host path (e.g. "/etc/app").
// std only finds a preopen by its exact name (std.process.Preopens, and only for executables with
// a main); these helpers resolve an absolute path against the preopens.

pub const FileError = error{ NotGranted, FileNotFound, AccessDenied, IsDir, NotDir, OutOfMemory, Unexpected };

/// A short reason for a FileError, for messages like "<path>: <reason>".
pub fn describe(err: FileError) []const u8 {
    return switch (err) {
        error.NotGranted => "not in a directory granted to the plugin",
        error.FileNotFound => "no such file or directory",
        error.AccessDenied => "permission denied",
        error.IsDir => "is a directory",
        error.NotDir => "not a directory",
        error.OutOfMemory => "out of memory",
        error.Unexpected => "unexpected error",
    };
}

fn check(errno: wasi.errno_t) FileError!void {
    return switch (errno) {
        .SUCCESS => {},
        .NOENT => error.FileNotFound,
        .ACCES, .PERM, .NOTCAPABLE => error.AccessDenied,
        .ISDIR => error.IsDir,
        .NOTDIR => error.NotDir,
        .NOMEM => error.OutOfMemory,
        else => error.Unexpected,
    };
}

/// A granted directory and a path relative to it.
pub const Located = struct { dir: wasi.fd_t, relative: []const u8 };

/// Finds the preopen holding the absolute `path`: the one with the longest name that is `path` or
/// one of its parents. Preopens are numbered from fd 3 up; the first fd that is not open ends them.
pub fn locate(path: []const u8) FileError!Located {
    if (path.len == 0 or path[0] != '/') return error.NotGranted;
    var name_buffer: [4096]u8 = undefined;
    var best: ?Located = null;
    var best_len: usize = 0;
    var fd: wasi.fd_t = 3;
    while (true) : (fd += 1) {
        var prestat: wasi.prestat_t = undefined;
        switch (wasi.fd_prestat_get(fd, &prestat)) {
            .SUCCESS => {},
            .BADF => break,
            else => continue, // open, but not a preopen
        }
        const name_len = prestat.u.dir.pr_name_len;
        if (prestat.pr_type != .DIR or name_len > name_buffer.len) continue;
        if (wasi.fd_prestat_dir_name(fd, &name_buffer, name_len) != .SUCCESS) continue;
        // Some hosts count a trailing NUL; "/etc/app/" and "/etc/app" are the same directory.
        var name = std.mem.trimEnd(u8, name_buffer[0..name_len], "\x00");
        name = std.mem.trimEnd(u8, name, "/");
        if (!std.mem.startsWith(u8, path, name)) continue;
        if (path.len > name.len and path[name.len] != '/') continue; // "/etc/apps" is not in "/etc/app"
        if (best == null or name.len > best_len) {
            const rest = std.mem.trimStart(u8, path[name.len..], "/");
            best = .{ .dir = fd, .relative = if (rest.len == 0) "." else rest };
            best_len = name.len;
        }
    }
    return best orelse error.NotGranted;
}

/// Reads the whole file at the absolute `path`; the caller frees the bytes with `gpa`.
pub fn readFile(path: []const u8) FileError![]u8 {
    const where = try locate(path);
    var fd: wasi.fd_t = undefined;
    const rights: wasi.rights_t = .{ .FD_READ = true, .FD_FILESTAT_GET = true };
    try check(wasi.path_open(where.dir, .{ .SYMLINK_FOLLOW = true }, where.relative.ptr, where.relative.len, .{}, rights, .{}, .{}, &fd));
    defer _ = wasi.fd_close(fd);
    // A directory opens fine but cannot be read: say so rather than fail on fd_read.
    var stat: wasi.filestat_t = undefined;
    try check(wasi.fd_filestat_get(fd, &stat));
    if (stat.filetype == .DIRECTORY) return error.IsDir;

    var bytes: std.ArrayList(u8) = .empty;
    errdefer bytes.deinit(gpa);
    while (true) {
        try bytes.ensureUnusedCapacity(gpa, 4096);
        const free = bytes.unusedCapacitySlice();
        const iov = [_]wasi.iovec_t{.{ .base = free.ptr, .len = free.len }};
        var read: usize = 0;
        try check(wasi.fd_read(fd, &iov, iov.len, &read));
        if (read == 0) break;
        bytes.items.len += read;
    }
    return bytes.toOwnedSlice(gpa);
}
