// The smallest membership a MirrorDriver binds to: a view whose members the test sets, and its viewChange event.
import { EventEmitter } from "eventemitter3";

type ViewChange = { view: { members: { id: string }[] } };

export class FakeMembership {
  view: { members: { id: string }[] } = { members: [] };
  private readonly ee = new EventEmitter<{ viewChange: [ViewChange] }>();
  set(ids: string[]): void {
    this.view = { members: ids.map((id) => ({ id })) };
    this.ee.emit("viewChange", { view: this.view });
  }
  on(_e: "viewChange", fn: (e: ViewChange) => void): void {
    this.ee.on("viewChange", fn);
  }
  off(_e: "viewChange", fn: (e: ViewChange) => void): void {
    this.ee.off("viewChange", fn);
  }
}
