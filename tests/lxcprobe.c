/* What a hostile tenant tries from inside a container, for tests/test_lxc_node.py.
 * Built statically by the tests (gcc -static), copied into a container and run there.
 *
 *   lxcprobe escape PATH   double-chroot escape, then read PATH: prints "escaped: <content>"
 *                          if the host's file is reached, "contained" if not
 *   lxcprobe blockdev      mknod a block device, then mount a file system: prints
 *                          "mknod: <errno text>" and "mount: <errno text>"
 *   lxcprobe alloc MB      allocate and touch MB megabytes, then print "allocated"
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static int escape(const char *path) {
    char buf[256];
    mkdir("/tmp/ezt-escape", 0700);
    if (chroot("/tmp/ezt-escape") != 0) {  /* the cwd stays outside the new root */
        printf("chroot: %s\n", strerror(errno));
    }
    for (int i = 0; i < 64; i++) {
        if (chdir("..") != 0) break;
    }
    if (chroot(".") != 0) {
        printf("chroot .: %s\n", strerror(errno));
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        printf("contained\n");
        return 0;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    printf("escaped: %s\n", buf);
    return 0;
}

static int blockdev(void) {
    int rc = mknod("/tmp/ezt-sda", S_IFBLK | 0600, makedev(8, 0));
    printf("mknod: %s\n", rc == 0 ? "ok" : strerror(errno));
    mkdir("/tmp/ezt-mnt", 0700);
    rc = mount(rc == 0 ? "/tmp/ezt-sda" : "/dev/null", "/tmp/ezt-mnt", "ext4", 0, NULL);
    printf("mount: %s\n", rc == 0 ? "ok" : strerror(errno));
    return 0;
}

static int alloc(long megabytes) {
    for (long i = 0; i < megabytes; i++) {
        char *block = malloc(1 << 20);
        if (block == NULL) {
            printf("malloc failed at %ld MB\n", i);
            return 1;
        }
        memset(block, 1, 1 << 20);
    }
    printf("allocated\n");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc == 3 && strcmp(argv[1], "escape") == 0) return escape(argv[2]);
    if (argc == 2 && strcmp(argv[1], "blockdev") == 0) return blockdev();
    if (argc == 3 && strcmp(argv[1], "alloc") == 0) return alloc(atol(argv[2]));
    fprintf(stderr, "usage: lxcprobe escape PATH | blockdev | alloc MB\n");
    return 2;
}
