use kong_keyring::keyring::{Keyring, Outcome};
use kong_keyring::region::Region;
use std::time::Instant;
fn main() {
    let ring = Keyring::new(Region::create().unwrap());
    let (id, _) = ring.generate().unwrap();
    ring.activate(&id).unwrap();
    let ctx = b"basicauth_credentials:fc46ce48-c1d6-4078-9f51-5a777350a8a2";
    let plain = [b'5'; 40];
    let mut out = [0u8; 4096];
    let v = ring.encrypt(&plain, ctx).unwrap().unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..1_000_000 { std::hint::black_box(ring.encrypt_into(std::hint::black_box(&plain), ctx, &mut out).unwrap()); }
        let e = t.elapsed();
        let t = Instant::now();
        for _ in 0..1_000_000 { let o = ring.decrypt_into(std::hint::black_box(&v), ctx, &mut out).unwrap(); assert!(matches!(o, Outcome::Written(40))); }
        println!("enc {:?}/op dec {:?}/op", e / 1_000_000, t.elapsed() / 1_000_000);
    }
}
