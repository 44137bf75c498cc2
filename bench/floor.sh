# The boot floor's initrd, shared by bench/boot.sh and bench/ctr-run.sh (sourced): busybox as
# /init's interpreter, powering off at once, so a boot measures OVMF and the kernel alone.
# floor_initrd DIR: builds DIR/floor.img (from DIR/floor/) and prints its path.
floor_initrd() {
    mkdir -p "$1/floor/bin"
    cp "${TSUBA_BUSYBOX:-/bin/busybox}" "$1/floor/bin/busybox"
    printf '#!/bin/busybox sh\n/bin/busybox poweroff -f\n' >"$1/floor/init"
    chmod 755 "$1/floor/init"
    (cd "$1/floor" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -9n) >"$1/floor.img"
    echo "$1/floor.img"
}
