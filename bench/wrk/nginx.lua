-- nginx's static 1 KiB file: the ceiling for reads.
wrk.method = "GET"
wrk.path = "/1k.bin"
