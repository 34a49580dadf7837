//! The `kubernetes: true` shorthand: `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`
//! in the `cri` format, with `namespace`, `pod` and `container` fields from the file name.

/// The glob the shorthand reads.
pub const CONTAINER_LOGS: &str = "/var/log/containers/*.log";

/// Pod, namespace and container of a container log file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    /// Pod name.
    pub pod: String,
    /// Namespace.
    pub namespace: String,
    /// Container name.
    pub container: String,
}

/// Parses `<pod>_<namespace>_<container>-<id>.log` (the file name, or a path ending in it).
pub fn parse_file_name(path: &str) -> Option<ContainerRef> {
    let name = path.rsplit('/').next()?;
    let stem = name.strip_suffix(".log")?;
    let mut parts = stem.splitn(3, '_');
    let pod = parts.next()?;
    let namespace = parts.next()?;
    let rest = parts.next()?;
    let (container, id) = rest.rsplit_once('-')?;
    if pod.is_empty() || namespace.is_empty() || container.is_empty() || id.is_empty() {
        return None;
    }
    Some(ContainerRef {
        pod: pod.to_owned(),
        namespace: namespace.to_owned(),
        container: container.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_container_log_names() {
        let r = parse_file_name(
            "/var/log/containers/web-7d9f8-abcde_shop_nginx-proxy-0123456789abcdef.log",
        )
        .unwrap();
        assert_eq!(r.pod, "web-7d9f8-abcde");
        assert_eq!(r.namespace, "shop");
        assert_eq!(r.container, "nginx-proxy");
        assert_eq!(parse_file_name("/var/log/syslog"), None);
        assert_eq!(parse_file_name("a_b.log"), None);
    }
}
