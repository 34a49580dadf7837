//! release: a facts plugin in Zig. Reads a release file of KEY=VALUE lines (config.path) and
//! reports its entries as the fact `release`, plus the metric app_release_info{version="..."} 1.
const std = @import("std");
const driftless = @import("driftless");

comptime {
    _ = driftless; // brings in the driftless_alloc export
}

const manifest =
    \\{"name":"release","version":"1.0.0","abi":1,"kinds":["facts"],
    \\ "configSchema":{"type":"object","properties":{"path":{"type":"string"}},
    \\                 "required":["path"],"additionalProperties":false}}
;

/// config.path, an absolute path inside a directory the policy grants.
var release_path: []u8 = &.{};

export fn driftless_manifest() i64 {
    return driftless.pack(manifest);
}

/// {"config": {"path": "/etc/app/release"}}: remembers the path.
export fn driftless_init(ptr: [*]u8, len: usize) i64 {
    const Input = struct { config: struct { path: []const u8 } };
    const input = driftless.parseInput(Input, ptr, len) catch
        return driftless.fail("release: config.path is required and must be a string", .{});
    defer input.deinit();
    const path = driftless.gpa.dupe(u8, input.value.config.path) catch
        return driftless.fail("out of memory", .{});
    driftless.gpa.free(release_path);
    release_path = path;
    return driftless.returnStatic("{}");
}

/// {} -> {"facts": {"release": {...}}, "metrics": [app_release_info]}.
export fn driftless_facts(ptr: [*]u8, len: usize) i64 {
    driftless.freeInput(ptr, len);
    if (release_path.len == 0) return driftless.fail("release: not configured", .{});
    const text = driftless.readFile(release_path) catch |err|
        return driftless.fail("{s}: {s}", .{ release_path, driftless.describe(err) });
    defer driftless.gpa.free(text);
    if (!std.unicode.utf8ValidateSlice(text))
        return driftless.fail("{s}: not UTF-8 text", .{release_path});
    return report(text) catch driftless.fail("out of memory", .{});
}

/// The entries of the release file, in file order (a repeated key keeps its last value). Empty
/// lines, `#` comments and lines without `=` are skipped; a value in matching quotes loses them, as
/// in /etc/os-release.
fn report(text: []const u8) !i64 {
    var release: std.json.ArrayHashMap([]const u8) = .{};
    defer release.deinit(driftless.gpa);
    var lines = std.mem.splitScalar(u8, text, '\n');
    while (lines.next()) |raw_line| {
        const line = std.mem.trim(u8, raw_line, " \t\r");
        if (line.len == 0 or line[0] == '#') continue;
        const eq = std.mem.indexOfScalar(u8, line, '=') orelse continue;
        const key = std.mem.trim(u8, line[0..eq], " \t");
        if (key.len == 0) continue;
        try release.map.put(driftless.gpa, key, unquote(std.mem.trim(u8, line[eq + 1 ..], " \t")));
    }

    const metric = .{
        .name = "app_release_info",
        .help = "Application release, from the release file.",
        .type = "gauge",
        .labels = .{ .version = release.map.get("VERSION") orelse "" },
        .value = 1,
    };
    return driftless.returnJson(.{ .facts = .{ .release = release }, .metrics = .{metric} });
}

fn unquote(value: []const u8) []const u8 {
    if (value.len >= 2 and (value[0] == '"' or value[0] == '\'') and value[value.len - 1] == value[0])
        return value[1 .. value.len - 1];
    return value;
}
