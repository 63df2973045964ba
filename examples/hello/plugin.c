/* libhello-plugin.so.1: loaded by hello with dlopen() at run time, never linked. */
const char *plugin_name(void) { return "hello-plugin 1.0"; }
