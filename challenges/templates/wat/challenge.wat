;; {{NAME}}: scaffolded challenge (ABI v1, WAT). Build: validator-node challenge build .
(module
  (memory (export "memory") 1)
  (global $top (mut i32) (i32.const 1024))
  (data (i32.const 16) "{\"name\":\"{{NAME}}\",\"abi\":1}")

  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $start i32) (local $end i32) (local $have i32)
    (local.set $start (i32.and (i32.add (global.get $top) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $start) (local.get $len)))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then (if (i32.eq (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535))
                                                (i32.const 16)))
                        (i32.const -1))
              (then unreachable))))
    (global.set $top (local.get $end))
    (local.get $start))

  (func (export "abi_version") (result i32) (i32.const 1))

  (func (export "describe") (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const {{DESCRIBE_LEN}})))

  ;; share of positions where the submission repeats the task byte; -1 for an empty submission
  (func (export "evaluate") (param $tp i32) (param $tl i32) (param $sp i32) (param $sl i32) (result i64)
    (local $n i32) (local $m i32) (local $i i32) (local $same i64)
    (if (i32.eqz (local.get $sl)) (then (return (i64.const -1))))
    (local.set $n (select (local.get $tl) (local.get $sl) (i32.lt_u (local.get $tl) (local.get $sl))))
    (local.set $m (select (local.get $tl) (local.get $sl) (i32.gt_u (local.get $tl) (local.get $sl))))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $n)))
      (if (i32.eq (i32.load8_u (i32.add (local.get $tp) (local.get $i))) (i32.load8_u (i32.add (local.get $sp) (local.get $i))))
        (then (local.set $same (i64.add (local.get $same) (i64.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (i64.div_u (i64.mul (local.get $same) (i64.const 1000000000)) (i64.extend_i32_u (local.get $m))))
)
