@0xd4c9b5a1e2f38a71;
# Normalised Kalshi trade, as later stages of ssmd decode it from the raw archive.

struct Trade {
  tradeId    @0 :Text;
  ticker     @1 :Text;
  yesPrice   @2 :UInt32;   # cents
  noPrice    @3 :UInt32;   # cents
  count      @4 :UInt64;
  takerSide  @5 :Side;
  ts         @6 :Int64;    # unix seconds
  receivedAt @7 :Int64;    # unix microseconds, ssmd receive time

  enum Side {
    yes @0;
    no  @1;
  }
}
