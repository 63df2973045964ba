/* libgreet.so.1: one function whose answer depends on how the library was built
   (build.sh sets GREETING), so two builds of "the same" library can be told apart. */
#ifndef GREETING
#define GREETING "hello from libgreet 1"
#endif

const char *greet(void) { return GREETING; }
