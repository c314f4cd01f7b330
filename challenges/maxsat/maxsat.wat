;; maxsat: MAX-SAT assignments (ABI v1, hand-written WAT).
;;
;; Task:       u32 LE nvars (1..1_000_000), u32 LE nclauses (>= 1), then per clause: u32 LE k (1..64) and
;;             k i32 LE literals (+v is variable v true, -v is variable v false, 1 <= v <= nvars).
;;             No trailing bytes.
;; Submission: exactly ceil(nvars / 8) bytes; bit (v-1) % 8 of byte (v-1) / 8 is variable v (LSB first).
;; Score:      1e9 * satisfied_clauses / nclauses (integer division).
;; Errors:     -1 submission of the wrong size, -3 malformed task.
(module
  (memory (export "memory") 1)
  (global $top (mut i32) (i32.const 4096))   ;; heap starts after the data below
  (data (i32.const 64) "{\"name\":\"maxsat\",\"abi\":1,\"version\":1,\"task\":\"u32 nvars, u32 nclauses, clauses: u32 k + k*i32 literals\",\"submission\":\"ceil(nvars/8) bytes, bit v-1 = value of var v (LSB first)\",\"score\":\"1e9*satisfied/nclauses\"}")

  ;; bump allocator: grows memory as needed, traps if the host's memory cap refuses
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $start i32) (local $end i32) (local $have i32)
    (local.set $start (i32.and (i32.add (global.get $top) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $start) (local.get $len)))
    (if (i32.lt_u (local.get $end) (local.get $start)) (then unreachable))
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
    (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 209)))

  (func (export "evaluate") (param $tp i32) (param $tl i32) (param $sp i32) (param $sl i32) (result i64)
    (local $nv i32) (local $nc i32) (local $pos i32) (local $c i32) (local $k i32) (local $j i32)
    (local $lit i32) (local $v i32) (local $bit i32) (local $sat i32) (local $nsat i64)
    (if (i32.lt_u (local.get $tl) (i32.const 8)) (then (return (i64.const -3))))
    (local.set $nv (i32.load (local.get $tp)))
    (local.set $nc (i32.load offset=4 (local.get $tp)))
    (if (i32.or (i32.eqz (local.get $nv)) (i32.gt_u (local.get $nv) (i32.const 1000000)))
      (then (return (i64.const -3))))
    (if (i32.eqz (local.get $nc)) (then (return (i64.const -3))))
    (if (i32.ne (local.get $sl) (i32.shr_u (i32.add (local.get $nv) (i32.const 7)) (i32.const 3)))
      (then (return (i64.const -1))))
    (local.set $pos (i32.const 8))
    (block $done (loop $clauses
      (br_if $done (i32.ge_u (local.get $c) (local.get $nc)))
      (if (i32.gt_u (i32.add (local.get $pos) (i32.const 4)) (local.get $tl)) (then (return (i64.const -3))))
      (local.set $k (i32.load (i32.add (local.get $tp) (local.get $pos))))
      (local.set $pos (i32.add (local.get $pos) (i32.const 4)))
      (if (i32.or (i32.eqz (local.get $k)) (i32.gt_u (local.get $k) (i32.const 64))) (then (return (i64.const -3))))
      (if (i32.gt_u (i32.add (local.get $pos) (i32.shl (local.get $k) (i32.const 2))) (local.get $tl))
        (then (return (i64.const -3))))
      (local.set $sat (i32.const 0))
      (local.set $j (i32.const 0))
      (block $ld (loop $lits
        (br_if $ld (i32.ge_u (local.get $j) (local.get $k)))
        (local.set $lit (i32.load (i32.add (local.get $tp) (i32.add (local.get $pos) (i32.shl (local.get $j) (i32.const 2))))))
        (local.set $v (select (i32.sub (i32.const 0) (local.get $lit)) (local.get $lit)
                              (i32.lt_s (local.get $lit) (i32.const 0))))
        (if (i32.or (i32.eqz (local.get $v)) (i32.gt_u (local.get $v) (local.get $nv))) (then (return (i64.const -3))))
        (local.set $v (i32.sub (local.get $v) (i32.const 1)))
        (local.set $bit (i32.and (i32.shr_u (i32.load8_u (i32.add (local.get $sp) (i32.shr_u (local.get $v) (i32.const 3))))
                                            (i32.and (local.get $v) (i32.const 7)))
                                 (i32.const 1)))
        (if (i32.eq (local.get $bit) (i32.gt_s (local.get $lit) (i32.const 0))) (then (local.set $sat (i32.const 1))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $lits)))
      (local.set $nsat (i64.add (local.get $nsat) (i64.extend_i32_u (local.get $sat))))
      (local.set $pos (i32.add (local.get $pos) (i32.shl (local.get $k) (i32.const 2))))
      (local.set $c (i32.add (local.get $c) (i32.const 1)))
      (br $clauses)))
    (if (i32.ne (local.get $pos) (local.get $tl)) (then (return (i64.const -3))))
    (i64.div_u (i64.mul (local.get $nsat) (i64.const 1000000000)) (i64.extend_i32_u (local.get $nc))))
)
