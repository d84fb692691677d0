#!/usr/bin/env bash
# Makes a minimal busybox root filesystem in DIR (from Debian's
# busybox-static): every applet, /etc/passwd with root and `app` (1000:1000),
# and the usual top-level directories.
#   scripts/make-rootfs.sh DIR
set -euo pipefail
dir=${1:?usage: make-rootfs.sh DIR}
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "make-rootfs.sh: $busybox missing; run scripts/deps.sh" >&2; exit 1; }

mkdir -p "$dir"/{bin,sbin,etc,proc,sys,dev,tmp,run,root,home/app,usr/bin,usr/sbin,var/tmp}
chmod 1777 "$dir/tmp" "$dir/var/tmp"
cp "$busybox" "$dir/bin/busybox"
for applet in $("$busybox" --list-full); do
  [ -e "$dir/$applet" ] || ln -s /bin/busybox "$dir/$applet"
done
cat > "$dir/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$dir/etc/group" <<'GROUP'
root:x:0:
app:x:1000:
staff:x:50:app
nogroup:x:65534:
GROUP
chown 1000:1000 "$dir/home/app" 2>/dev/null || true
