{
  "targets": [
    {
      "target_name": "keel",
      "sources": [
        "native/addon.cc",
        "native/pool.cc",
        "native/isa.cc",
        "native/matmul.cc",
        "native/ops.cc",
        "native/attention.cc",
        "native/optim.cc",
        "native/reduce.cc",
        "native/average.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-O3", "-std=c++17", "-fno-math-errno", "-fno-trapping-math", "-pthread"],
      "ldflags": ["-pthread"],
      "xcode_settings": { "OTHER_CPLUSPLUSFLAGS": ["-O3", "-std=c++17"] }
    }
  ]
}
