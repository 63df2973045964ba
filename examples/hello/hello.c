/* hello: a small program to bundle. It prints what its library says, whether LD_LIBRARY_PATH
   is set (it should not be under launch = "loader"), and loads a plugin with dlopen() by
   soname. With --wait it then sleeps until killed, so it can run under a supervisor. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *greet(void);

int main(int argc, char **argv) {
    const char *lp = getenv("LD_LIBRARY_PATH");
    printf("hello: argv0=%s\n", argv[0]);
    printf("hello: greet=%s\n", greet());
    printf("hello: LD_LIBRARY_PATH=%s\n", lp ? lp : "(unset)");
    void *h = dlopen("libhello-plugin.so.1", RTLD_NOW);
    if (h == NULL) {
        printf("hello: plugin=none (%s)\n", dlerror());
    } else {
        const char *(*name)(void) = (const char *(*)(void))dlsym(h, "plugin_name");
        printf("hello: plugin=%s\n", name ? name() : "?");
    }
    fflush(stdout);
    if (argc > 1 && strcmp(argv[1], "--wait") == 0) {
        for (;;) pause();
    }
    return 0;
}
