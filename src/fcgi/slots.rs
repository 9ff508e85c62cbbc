//! A connection's request table by FastCGI request id.

/// The request table by id. A vector, not a hash map: web servers send one request per
/// connection at a time (nginx, Apache) or a few, and every open stream's connection holds one
/// table (a hash map's smallest allocation is four times this one's).
pub(super) struct Slots<T>(Vec<(u16, T)>);

impl<T> Slots<T> {
    pub(super) fn get(&self, id: &u16) -> Option<&T> {
        self.0.iter().find(|(k, _)| k == id).map(|(_, s)| s)
    }
    pub(super) fn get_mut(&mut self, id: &u16) -> Option<&mut T> {
        self.0.iter_mut().find(|(k, _)| k == id).map(|(_, s)| s)
    }
    pub(super) fn contains_key(&self, id: &u16) -> bool {
        self.get(id).is_some()
    }
    pub(super) fn remove(&mut self, id: &u16) -> Option<T> {
        let i = self.0.iter().position(|(k, _)| k == id)?;
        let slot = self.0.swap_remove(i).1;
        if self.0.is_empty() {
            // Give the allocation back while the connection waits for its next request.
            self.0 = Vec::new();
        }
        Some(slot)
    }
    pub(super) fn insert(&mut self, id: u16, slot: T) {
        match self.get_mut(&id) {
            Some(s) => *s = slot,
            None => {
                // One slot, not the four a first push reserves.
                self.0.reserve_exact(1);
                self.0.push((id, slot));
            }
        }
    }
    pub(super) fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(_, s)| s)
    }
    pub(super) fn iter(&self) -> impl Iterator<Item = (&u16, &T)> {
        self.0.iter().map(|(k, s)| (k, s))
    }
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&u16, &mut T)> {
        self.0.iter_mut().map(|(k, s)| (&*k, s))
    }
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;

    #[test]
    fn insert_get_remove_and_the_room_given_back() {
        let mut s = Slots::default();
        s.insert(1, "a");
        s.insert(7, "b");
        s.insert(1, "c");
        assert_eq!((s.len(), s.get(&1), s.get(&7)), (2, Some(&"c"), Some(&"b")));
        assert!(s.contains_key(&7) && !s.contains_key(&2));
        assert_eq!(s.remove(&1), Some("c"));
        assert_eq!(s.remove(&1), None);
        assert_eq!(s.remove(&7), Some("b"));
        assert!(s.is_empty());
        assert_eq!(s.0.capacity(), 0, "an idle connection holds no table");
        s.insert(3, "d");
        assert_eq!(s.0.capacity(), 1, "one slot, not four");
    }
}
