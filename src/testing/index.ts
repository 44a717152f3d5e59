// Test helpers users can import: fake clock, fake network, the simulator, the namespace lab.
export {};
